"""Shared test data: simulated screens turned into CRLData without the workflow."""

from __future__ import annotations

import functools

from crl_pipe.simulate import screen_to_crl_data, simulate_screen


@functools.lru_cache(maxsize=8)
def screen_and_data(**params):
    """A simulated screen and its log-normalised CRLData (cached: tests must not mutate them)."""
    screen = simulate_screen(**params)
    return screen, screen_to_crl_data(screen, with_counts=False)


def assert_same_state(a, b) -> None:
    """Two torch modules hold identical tensors under identical names (determinism, resume)."""
    import torch

    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for key in sa:
        assert torch.equal(sa[key], sb[key]), key
