"""Multi-host tests on Linux network namespaces; the lab itself is in harness.py."""
