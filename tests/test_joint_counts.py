"""The joint count model (crl_pipe/models/_joint_counts.py): where a downstream program takes over the
library, its parent's anchors hold nearly no counts in the cells where it is high, and the parent's
perturbation means and cells' latents are read from the programs it moves with."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from crl_pipe.models._count_means import count_group_shifts, count_posterior_means
from crl_pipe.models._joint_counts import JointAnchors, _anchor_step, joint_group_means, joint_posterior_means


def _parent_and_greedy_child(seed: int, n: int = 300, child_slopes: tuple[float, float] = (0.8, 1.2)):
    """Programs 0 -> 1 (z1 = 1.5 z0 + noise); program 1's anchors take over the library when it is high,
    so program 0's anchors fall to near zero counts there. Controls, and perturbations of 0, of 1 (up and
    down) and of neither; 40 housekeeping genes size the cells. Returns what a first pass of the
    per-program count models gives, and the true means in control SDs. ``child_slopes``: the range of
    the child's anchors' slopes (steeper: the child takes more of the library, up to all of it)."""
    rng = np.random.default_rng(seed)
    shift = np.array([[0, 0], [2.5, 0], [0, 2.5], [0, -2.5], [0, 0]], dtype=float)
    group = np.repeat(np.arange(len(shift)), [1000] + [n] * (len(shift) - 1))
    z0 = shift[group, 0] + rng.standard_normal(len(group))
    z1 = 1.5 * z0 + shift[group, 1] * np.sqrt(3.25) + rng.standard_normal(len(group))
    z = np.column_stack([z0, z1])
    a = np.concatenate([rng.uniform(0.4, 0.8, 8), rng.uniform(*child_slopes, 8)])
    base = np.concatenate([rng.normal(0, 0.3, 8), rng.normal(3.0, 0.3, 8), rng.normal(0, 0.3, 40)])
    log_mu = base + np.column_stack([np.outer(z0, a[:8]), np.outer(z1, a[8:]), np.zeros((len(group), 40))])
    props = np.exp(log_mu - log_mu.max(1, keepdims=True))
    mean = np.exp(rng.normal(np.log(3000), 0.3, len(group)))[:, None] * props / props.sum(1, keepdims=True)
    counts = rng.poisson(rng.gamma(10.0, mean / 10.0))
    size = counts[:, 16:].sum(1) + 1.0
    control = group == 0
    truth = np.array([z[group == k].mean(0) for k in range(len(shift))]) - z[control].mean(0)
    truth /= z[control].std(0)
    columns = [list(range(8)), list(range(8, 16))]
    score = np.column_stack([np.log1p(counts[:, c] / size[:, None] * 100).mean(1) for c in columns])
    score = (score - score[control].mean(0)) / score[control].std(0)
    alone, models = count_group_shifts(counts, size, columns, group, len(shift), score)
    raw = np.column_stack(
        [
            count_posterior_means(counts, size, c, m, score[:, k])
            for k, (c, m) in enumerate(zip(columns, models, strict=True))
        ]
    )
    anchors = JointAnchors(
        np.repeat([0, 1], 8), np.concatenate([m.b for m in models]), np.concatenate([m.a for m in models]),
        np.repeat([m.theta for m in models], 8),
    )  # fmt: skip
    return counts[:, :16], np.log(size), anchors, group, raw, alone, truth, z


@pytest.mark.parametrize("seed", [0, 1])
def test_joint_means_read_the_drowned_parent_from_its_child(seed):
    Y, log_size, anchors, group, raw, alone, truth, _ = _parent_and_greedy_child(seed)
    joint, *_ = joint_group_means(Y, log_size, anchors, group, 5, raw)
    error_alone, error_joint = np.abs(alone - truth).max(0), np.abs(joint - truth).max(0)
    assert error_alone[0] > 0.5, alone  # the parent, one program at a time: 0.78-0.92 on seeds 0-2
    assert error_joint[0] < 0.5 * error_alone[0], (joint, truth)  # 0.26-0.32
    assert error_joint[1] < 0.3, (joint, truth)  # the child: 0.15-0.19, as one program at a time
    assert joint[0] == pytest.approx([0.0, 0.0])


def test_joint_latents_follow_the_parent_better_than_its_own_anchors():
    """Each cell's latent under the label-free joint prior tracks the parent's truth better than the
    per-program posterior mean (r 0.88 -> 0.92 on seed 0): the child's counts tell where the parent's
    anchors say little."""
    Y, log_size, anchors, group, raw, _, _, z = _parent_and_greedy_child(0)
    _, centre, cov, *_ = joint_group_means(Y, log_size, anchors, group, 5, raw)
    assert cov[0, 1] / np.sqrt(cov[0, 0] * cov[1, 1]) > 0.5  # the programs co-vary, as 0 -> 1 says
    post = joint_posterior_means(Y, log_size, anchors, centre, cov, raw, chunk=500)
    assert np.corrcoef(post[:, 0], z[:, 0])[0, 1] > np.corrcoef(raw[:, 0], z[:, 0])[0, 1] + 0.02
    assert np.corrcoef(post[:, 1], z[:, 1])[0, 1] > np.corrcoef(raw[:, 1], z[:, 1])[0, 1] - 0.01
    whole = joint_posterior_means(Y, log_size, anchors, centre, cov, raw)
    assert whole == pytest.approx(post)


@pytest.mark.parametrize("seed", [0, 1])
def test_a_latent_size_factor_reads_cells_whose_child_took_the_whole_library(seed):
    """With steeper child anchors a quarter of the cells keep 5 counts or fewer on their 40 housekeeping
    genes: the measured size factor (that total plus one) says little there and is biased, and with it
    both programs' means (largest errors 0.94-1.33 and 0.65-0.72 on seeds 0-2). Taken as one more latent,
    with the housekeeping total as its observation, the anchors tell the size too (0.52-0.85, 0.27-0.35)."""
    Y, log_size, anchors, group, raw, _, truth, z = _parent_and_greedy_child(seed, child_slopes=(1.5, 2.0))
    total = np.exp(log_size) - 1.0
    assert (total <= 5).mean() > 0.2
    measured, *_ = joint_group_means(Y, log_size, anchors, group, 5, raw)
    latent, centre, cov, *_ = joint_group_means(Y, log_size, anchors, group, 5, raw, stable_total=total)
    error_measured, error_latent = np.abs(measured - truth).max(0), np.abs(latent - truth).max(0)
    assert (error_latent < 0.75 * error_measured).all(), (error_measured, error_latent)
    assert error_latent[1] < 0.45, (latent, truth)
    assert centre.shape == (3,) and cov.shape == (3, 3)  # the log size factor comes last
    assert cov[2, :2] == pytest.approx([0.0, 0.0])  # ... and stays apart from the programs in the prior
    post = joint_posterior_means(Y, log_size, anchors, centre, cov, raw, stable_total=total, chunk=500)
    assert post.shape == raw.shape
    assert np.corrcoef(post[:, 1], z[:, 1])[0, 1] > 0.9
    whole = joint_posterior_means(Y, log_size, anchors, centre, cov, raw, stable_total=total)
    assert whole == pytest.approx(post)


@pytest.mark.parametrize("seed", [0, 1])
def test_the_share_the_cells_resolve_is_least_where_the_child_took_the_library(seed):
    """Per group and program, the share of the latent's control variance that the group's cells resolve
    (one less their mean posterior variance over it; what the graph equations weigh a perturbation by).
    Where the child is raised, 79-89 % of the cells are starved and the parent's anchors are empty in
    most of them: its mean there comes most from the prior (share 0.61-0.63 on seeds 0-2, controls
    0.87-0.89), and it is the parent's mean that is furthest off."""
    Y, log_size, anchors, group, raw, _, truth, _ = _parent_and_greedy_child(seed, child_slopes=(1.5, 2.0))
    total = np.exp(log_size) - 1.0
    means, *_, resolved = joint_group_means(Y, log_size, anchors, group, 5, raw, stable_total=total)
    assert resolved.shape == (5, 2) and ((resolved >= 0) & (resolved <= 1)).all()
    assert np.argmin(resolved[:, 0]) == 2 == np.argmax(np.abs(means - truth)[:, 0])
    assert resolved[0, 0] > 0.8 and resolved[2, 0] < resolved[0, 0] - 0.2
    assert resolved[:, 1].min() > 0.85  # the child's own anchors hold counts in every group


@pytest.mark.parametrize("seed", [0, 1])
def test_refitting_the_anchor_models_in_the_joint_model_reads_starved_cells_better(seed):
    """The per-program anchor models read each program alone with the measured size factor; refitted
    in the joint EM, on the likelihood expected over the cells' posteriors, both programs' means come
    closer to the truth where a quarter of the cells are starved (largest errors 0.52-0.85 and 0.27-0.35
    -> 0.33-0.54 and 0.19-0.21 on seeds 0-2), and they keep each program's location and scale."""
    Y, log_size, anchors, group, raw, _, truth, _ = _parent_and_greedy_child(seed, child_slopes=(1.5, 2.0))
    total = np.exp(log_size) - 1.0
    kept, *_ = joint_group_means(Y, log_size, anchors, group, 5, raw, stable_total=total)
    refit, _, _, fitted, _ = joint_group_means(
        Y, log_size, anchors, group, 5, raw, stable_total=total, refit_anchors=True
    )
    error_kept, error_refit = np.abs(kept - truth).max(0), np.abs(refit - truth).max(0)
    assert (error_refit < 0.8 * error_kept).all(), (error_kept, error_refit)
    assert error_refit[1] < 0.25, (refit, truth)
    for k in (0, 1):  # the affine pin: each program's mean intercept and slope stay where they were
        mine = anchors.program == k
        assert fitted.a[mine].mean() == pytest.approx(anchors.a[mine].mean())
        assert fitted.b[mine].mean() == pytest.approx(anchors.b[mine].mean())
        assert not np.allclose(fitted.b[mine], anchors.b[mine])  # ... while the anchors' own models moved
    assert np.abs(np.log(fitted.theta / 10.0)).max() < 0.1  # the simulator's dispersion is 10


def test_refitting_the_anchor_models_leaves_a_well_read_screen_as_it_was():
    Y, log_size, anchors, group, raw, _, truth, _ = _parent_and_greedy_child(0)
    total = np.exp(log_size) - 1.0
    kept, *_ = joint_group_means(Y, log_size, anchors, group, 5, raw, stable_total=total)
    refit, *_ = joint_group_means(Y, log_size, anchors, group, 5, raw, stable_total=total, refit_anchors=True)
    assert refit == pytest.approx(kept, abs=0.03)
    assert np.abs(refit - truth).max() < 0.25


def test_a_degenerate_anchor_step_keeps_the_anchor_models():
    """Cells whose latents all sit at one value leave an anchor's slope undetermined (a singular Newton
    system): the step keeps the anchors' models and the latents instead of writing NaN into them."""
    n, program = 50, torch.tensor([0, 0, 1, 1])
    Y = torch.ones(n, 4, dtype=torch.float64)
    z = torch.zeros(n, 2, dtype=torch.float64)
    parts = (program, torch.zeros(4, dtype=torch.float64), torch.ones(4, dtype=torch.float64),
             torch.full((4,), 10.0, dtype=torch.float64), None)  # fmt: skip
    post_cov = torch.zeros(n, 2, 2, dtype=torch.float64)
    kept, z_after, _ = _anchor_step(Y, torch.zeros(n, dtype=torch.float64), parts, z, post_cov)
    assert all(torch.equal(a, b) for a, b in zip(kept[:4], parts[:4], strict=True))
    assert torch.equal(z_after, z)


def test_linear_with_refitted_anchors_stores_them_and_still_draws_a_dense_graph(tmp_path):
    """``refit_anchors: true`` end to end: the stored anchor models are the refitted ones (moved, with
    each program's mean intercept and slope kept), the graph of a dense screen stays exact, and a saved
    model gives the same latents."""
    from test_count_means import DENSE

    from crl_pipe import tl
    from crl_pipe.models import load_model
    from crl_pipe.simulate import screen_to_crl_data, simulate_screen

    screen = simulate_screen(**DENSE, seed=0)
    data = screen_to_crl_data(screen)
    kept = tl.train(data, model="linear", seed=0)
    refit = tl.train(data, model="linear", params={"refit_anchors": True}, seed=0)
    anchor = kept.count_anchor.numpy()
    assert np.array_equal(anchor, refit.count_anchor.numpy())
    for name in ("count_b", "count_a"):
        before, after = getattr(kept, name).numpy(), getattr(refit, name).numpy()
        assert not np.allclose(before[anchor], after[anchor])
        mean = lambda v: (v * anchor).sum(0) / anchor.sum(0)  # noqa: E731
        assert mean(after) == pytest.approx(mean(before))
    assert np.isfinite(refit.count_model[:, 0].numpy()).all()
    adjacency = refit.get_adjacency().stack()
    graph = adjacency[adjacency != 0].rename_axis(["source", "target"]).reset_index(name="weight")
    latents = refit.get_latent_representation(data)
    m = tl.evaluate(
        graph=graph, targets=refit.get_targets(), latents=latents, true_graph=screen.graph,
        true_targets=screen.targets, true_latents=screen.latents,
    ).set_index("metric")["value"]  # fmt: skip
    assert m["target_accuracy"] == 1.0 and m["shd"] == 0
    refit.save(tmp_path / "model")
    again = load_model(tmp_path / "model")
    pd.testing.assert_frame_equal(again.get_latent_representation(data), latents)
