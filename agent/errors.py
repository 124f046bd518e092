"""The agent's domain errors: why an operation was refused, in the agent's own terms.

The agent raises these; the HTTP API (``agent.api``) alone decides which status each one is
answered with (``agent.api.STATUS``).  The message is the text the client sees.
"""

from __future__ import annotations


class ConfigError(ValueError):
    """Bad configuration. The message starts with the field, flag, variable or file at fault."""


class AgentError(Exception):
    """Base of the refusals the HTTP API turns into an error status."""


class InvalidEvent(AgentError):
    """A fire request that cannot be an event: no name, a reserved name, a bad filter, or a
    datacenter this agent does not serve.  Nothing was broadcast."""


class EventTooLarge(AgentError):
    """An event over the configured ``event_size_limit``.  Nothing was broadcast."""


class EventClockExhausted(AgentError):
    """The Lamport event clock can no longer advance, so no event can be fired."""


class NotDurable(AgentError):
    """An event was broadcast but could not be written to the data dir."""


class JoinError(AgentError):
    """No address of a join could be reached (the text says which and why)."""


class ReloadError(AgentError):
    """A reload that changed nothing: the new configuration is invalid (the text says why)."""
