"""Suite-wide settings.

Hypothesis: machines here are shared and noisy, so its timing health checks and per-example
deadlines would fail tests for reasons unrelated to the code; the examples themselves still
run in full.
"""

from hypothesis import HealthCheck, settings

settings.register_profile(
    "rumor", deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
settings.load_profile("rumor")
