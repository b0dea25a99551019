"""Shared test data: simulated screens turned into CRLData without the workflow."""

from __future__ import annotations

import functools

from crl_pipe.simulate import screen_to_crl_data, simulate_screen


@functools.lru_cache(maxsize=8)
def screen_and_data(**params):
    """A simulated screen and its log-normalised CRLData (cached: tests must not mutate them)."""
    screen = simulate_screen(**params)
    return screen, screen_to_crl_data(screen, with_counts=False)
