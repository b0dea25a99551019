"""Section "What if": each steering request's most changed genes with intervals and the chain of programs
that carries the effect, and the held-out singles predicted from prior knowledge beside three baselines;
for robot logs, each command request's predicted state trajectories (a figure) with the chain of channels
that carries it, and the held-out episodes' rollout errors beside persistence and a VAR."""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from ... import pl
from ...pl._common import ordered_unique
from .._blocks import FigureBlock, Table, figure
from .._format import natural_sorted, num
from .._inputs import ReportInputs

#: Genes shown per request (the largest predicted changes).
TOP_GENES = 10
#: Columns of the held-out singles table: metric of crl_pipe.tl.evaluate_singles -> header.
SINGLE_COLUMNS = {
    "pearson_delta_all": "Pearson Δ all genes",
    "pearson_delta_top20": "Pearson Δ top-20",
    "r2_delta_all": "R² Δ all genes",
    "r2_delta_top20": "R² Δ top-20",
    "mmd": "MMD",
}
#: How the baselines of held_out_singles.parquet are named in the report.
SINGLE_BASELINES = {
    "no_change": "no change (baseline)",
    "mean_change": "mean training change (baseline)",
    "linear_embedding": "linear gene-embedding model (baseline)",
}


#: Held-out rollout predictors: name in held_out_singles.parquet -> how the report names them.
ROLLOUT_BASELINES = {"persistence": "persistence (baseline)", "var": "vector autoregression (baseline)"}
#: Horizons of the rollout table: metric -> header.
ROLLOUT_COLUMNS = {f"rollout_rmse_h{h}": f"RMSE at {h} frame{'s' if h > 1 else ''}" for h in (1, 10, 30)}
ROLLOUT_CAPTION = (
    "Predicted change of each state (its own units) against the frames since the command started: the mean over "
    "starting episodes, the band the range over starts and bootstrap refits. Look for which states move and how "
    "fast; a state the command does not reach stays on the dashed zero line."
)


@dataclass
class RolloutBlock:
    """One command request of one robot model: the chains of channels that carry it and its trajectories."""

    model: str
    request: str
    route: str
    chains: list[str]
    figure: FigureBlock


@dataclass
class SteeringBlock:
    """One request of one model: how it reached the programs, the chains that carry it, its top genes."""

    model: str
    request: str
    route: str
    chains: list[str]
    table: Table


def whatif_section(inputs: ReportInputs) -> list[SteeringBlock | RolloutBlock]:
    """One block per model and steering request (empty when no model answered any); a robot's command
    requests give :class:`RolloutBlock` s (a figure of the state trajectories)."""
    blocks = []
    for model in inputs.models:
        if model.steering is None or not len(model.steering):
            continue
        if model.steering["frame"].notna().any():  # a robot's command rollouts: one row per frame
            blocks += _rollout_blocks(inputs, model.name, model.steering)
            continue
        for request, rows in model.steering.groupby("request", sort=False):
            top = rows.reindex(rows["predicted_change"].abs().sort_values(ascending=False).index).head(TOP_GENES)
            table = Table(
                ["gene", "predicted change", "interval", "carried by"],
                [
                    [str(r.feature), num(r.predicted_change), f"{num(r.lower)} to {num(r.upper)}", str(r.path)]
                    for r in top.itertuples()
                ],
                numeric=[1],
            )
            chains = [c for c in ordered_unique(top["path"]) if c]
            blocks.append(SteeringBlock(model.name, str(request), str(rows["route"].iloc[0]), chains, table))
    return blocks


def _rollout_blocks(inputs: ReportInputs, model: str, steering: pd.DataFrame) -> list[RolloutBlock]:
    blocks = []
    for request, rows in steering.groupby("request", sort=False):
        title = f"{inputs.dataset}: {model}, {request}"
        fig = figure(pl.steering_rollout(rows, request=str(request), title=title), ROLLOUT_CAPTION)
        moved = rows.loc[rows["predicted_change"].abs() > 0, "path"]
        chains = [c for c in ordered_unique(moved) if c]
        blocks.append(RolloutBlock(model, str(request), str(rows["route"].iloc[0]), chains, fig))
    return blocks


def rollouts_table(inputs: ReportInputs) -> Table | None:
    """Held-out episodes: each rolling-out model's RMSE at 1/10/30 frames beside persistence and a VAR."""
    rows = []
    for model in inputs.models:
        scores = model.singles
        if scores is None or not len(scores):
            continue
        scores = scores[scores["metric"].isin(list(ROLLOUT_COLUMNS))]
        wide = scores.pivot_table(index=["intervention", "predictor"], columns="metric", values="value", sort=False)
        for label in natural_sorted(ordered_unique(scores["intervention"])):
            for predictor in ["model", *ROLLOUT_BASELINES]:
                if (label, predictor) in wide.index:
                    values = wide.loc[(label, predictor)]
                    name = model.name if predictor == "model" else ROLLOUT_BASELINES[predictor]
                    rows.append([label, name, *[num(values.get(metric)) for metric in ROLLOUT_COLUMNS]])
    if not rows:
        return None
    return Table(["held-out episode", "predicted by", *ROLLOUT_COLUMNS.values()], rows, numeric=[2, 3, 4])


def singles_table(inputs: ReportInputs) -> Table | None:
    """Held-out singles: each steering model beside the three baselines (shown once); ``None`` without any."""
    scored = [m for m in inputs.models if m.singles is not None and len(m.singles)]
    scored = [m for m in scored if not m.singles["metric"].isin(list(ROLLOUT_COLUMNS)).all()]  # not a robot's
    if not scored:
        return None
    frames = [m.singles.assign(predictor=m.singles["predictor"].replace({"model": m.name})) for m in scored]
    table = pd.concat(frames, ignore_index=True).drop_duplicates(["intervention", "predictor", "metric"])
    wide = table.pivot_table(
        index=["intervention", "predictor"], columns="metric", values="value", sort=False, dropna=False
    )
    order = [m.name for m in scored] + list(SINGLE_BASELINES)
    rows = []
    for label in natural_sorted(ordered_unique(table["intervention"])):
        for predictor in order:
            if (label, predictor) in wide.index:
                values = wide.loc[(label, predictor)]
                name = SINGLE_BASELINES.get(predictor, predictor)
                rows.append([label, name, *[num(values.get(metric)) for metric in SINGLE_COLUMNS]])
    return Table(["held-out single", "predicted by", *SINGLE_COLUMNS.values()], rows, numeric=[2, 3, 4, 5, 6])
