"""Hypothesis settings for the fuzz suite: modest by default so the folder stays fast in the
default run; `QL_FUZZ_EXAMPLES=5000` raises every parser fuzzer's example count for a long run."""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

FUZZ_EXAMPLES = int(os.environ.get("QL_FUZZ_EXAMPLES", "120"))

settings.register_profile(
    "quoteloop-fuzz",
    max_examples=FUZZ_EXAMPLES,
    deadline=None,  # no timing assertions: a slow CI box must not fail a correctness property
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
)
