"""Part of the "Metrics" section: held-out combinations, each predicting model beside two baselines."""

from __future__ import annotations

import pandas as pd

from ...pl._common import ordered_unique
from .._blocks import Table
from .._format import natural_sorted, num
from .._inputs import ReportInputs

#: Columns of the held-out table: metric of crl_pipe.tl.evaluate_combinations -> header.
HELD_OUT_COLUMNS = {
    "r2_all_genes": "R² all genes",
    "r2_top20_genes": "R² top-20 genes",
    "r2_delta_top20_genes": "R² top-20 changes",
    "mmd": "MMD",
}
#: How the baselines of predictions.parquet are named in the report.
HELD_OUT_BASELINES = {"control": "control mean (baseline)", "additive": "additive (baseline)"}


def held_out_table(inputs: ReportInputs) -> Table | None:
    """Held-out combinations: each predicting model beside the control-mean and additive baselines (shown once);
    ``None`` when no model predicted any."""
    scored = [m for m in inputs.models if m.predictions is not None and len(m.predictions)]
    if not scored:
        return None
    frames = [m.predictions.assign(predictor=m.predictions["predictor"].replace({"model": m.name})) for m in scored]
    table = pd.concat(frames, ignore_index=True).drop_duplicates(["intervention", "predictor", "metric"])
    wide = table.pivot_table(index=["intervention", "predictor"], columns="metric", values="value", sort=False)
    order = [m.name for m in scored] + list(HELD_OUT_BASELINES)
    rows = []
    for label in natural_sorted(ordered_unique(table["intervention"])):
        for predictor in order:
            if (label, predictor) in wide.index:
                values = wide.loc[(label, predictor)]
                name = HELD_OUT_BASELINES.get(predictor, predictor)
                rows.append([label, name, *[num(values.get(metric)) for metric in HELD_OUT_COLUMNS]])
    return Table(["combination", "predicted by", *HELD_OUT_COLUMNS.values()], rows, numeric=[2, 3, 4, 5])
