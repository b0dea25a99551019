"""Section "What if": each steering request's most changed genes with intervals and the chain of programs
that carries the effect, and the held-out singles predicted from prior knowledge beside three baselines."""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from ...pl._common import ordered_unique
from .._blocks import Table
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


@dataclass
class SteeringBlock:
    """One request of one model: how it reached the programs, the chains that carry it, its top genes."""

    model: str
    request: str
    route: str
    chains: list[str]
    table: Table


def whatif_section(inputs: ReportInputs) -> list[SteeringBlock]:
    """One block per model and steering request (empty when no model answered any)."""
    blocks = []
    for model in inputs.models:
        if model.steering is None or not len(model.steering):
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


def singles_table(inputs: ReportInputs) -> Table | None:
    """Held-out singles: each steering model beside the three baselines (shown once); ``None`` without any."""
    scored = [m for m in inputs.models if m.singles is not None and len(m.singles)]
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
