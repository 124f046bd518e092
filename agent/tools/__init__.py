"""The client commands of ``rumor``: small programs that talk to a running agent over its HTTP
API (through ``agent.client``, stdlib only, so they start fast).  ``agent.cli`` holds the
command table and dispatch and runs the daemon (``rumor agent``); each module here holds a few
commands' ``cmd_*`` functions."""
