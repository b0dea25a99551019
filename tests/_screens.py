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


def assert_round_trip(model, data, path) -> object:
    """``model`` saved (weights-only loadable) and loaded back gives the same outputs; returns the loaded model."""
    import pandas as pd
    import torch

    from crl_pipe.models import load_model

    model.save(path)
    torch.load(path / "model.pt", weights_only=True)
    loaded = load_model(path)
    assert type(loaded) is type(model) and loaded.params == model.params
    pd.testing.assert_frame_equal(loaded.get_latent_representation(data), model.get_latent_representation(data))
    for output in ("get_targets", "get_adjacency", "get_loadings"):
        pd.testing.assert_frame_equal(getattr(loaded, output)(), getattr(model, output)())
    # the fit of the graph equations (what the report warns on) travels in model.json
    assert getattr(loaded, "equation_misfit", None) == getattr(model, "equation_misfit", None)
    return loaded
