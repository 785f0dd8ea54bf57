"""Shared test settings: a hypothesis profile sized for CI and for local runs."""

import os

from hypothesis import HealthCheck, settings

# The first call of a jitted function compiles for over a second: no deadline.
# Shapes are drawn from small fixed sets so compiled functions are reused.
settings.register_profile(
    "ci", max_examples=10, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow]
)
settings.register_profile("dev", max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("ci" if os.environ.get("CI") else "dev")
