"""Section "Where these data sit on the robustness atlas": the data's assumptions, and what the atlas expects."""

from __future__ import annotations

from typing import Any

import numpy as np

from ... import tl
from ..._errors import InputError
from ...io import read_h5ad
from .._blocks import Table
from .._format import num
from .._inputs import ReportInputs


def atlas_section(inputs: ReportInputs) -> dict[str, Any]:
    """Estimates (:func:`crl_pipe.tl.place_on_atlas`, on the atlas rows of the dataset's kind) as a table,
    the atlas's expectations at each nearest level per method, the weakest point in one sentence, and the
    notes (outside the atlas, not covered)."""
    try:
        atlas = tl.read_atlas()
    except InputError as err:
        return {"missing": str(err)}
    with_targets = [m for m in inputs.models if len(m.targets)]
    adata = read_h5ad(inputs.expression, backed=True) if inputs.expression else None
    try:
        place = tl.place_on_atlas(
            adata,
            inputs.labels,
            inputs.anchors,
            kind=inputs.vocabulary.atlas,
            targets=with_targets[0].targets if with_targets else None,
            data_driven_anchors="gene_sets" not in (inputs.anchor_provenance.get("inputs") or {}),
            methods=[m.name for m in inputs.fitted],
            atlas=atlas,
        )
    finally:
        if adata is not None and adata.isbacked:
            adata.file.close()
    estimates = Table(
        ["assumption", "estimate", "how", "nearest atlas level", "atlas range", "inside the atlas"],
        [
            [
                r.what,
                num(r.estimate) if np.isfinite(r.estimate) else "not estimated",
                r.detail,
                _level(r.level) if np.isfinite(r.level) else "-",
                f"{_level(r.atlas_min)} to {_level(r.atlas_max)}",
                ("yes" if r.inside else "no") if np.isfinite(r.estimate) else "-",
            ]
            for r in place.estimates.itertuples(index=False)
        ],
        numeric=[1, 3],
    )
    expected = Table(
        ["assumption", "atlas level", "method", "target accuracy", "SHD", "edge F1", "false-edge rate", "seeds"],
        [
            [
                tl.ATLAS_KNOBS[r.knob],
                _level(r.level),
                r.method,
                num(r.target_accuracy),
                num(r.shd),
                num(r.edge_f1),
                num(r.false_edge_rate),
                str(int(r.n_seeds)),
            ]
            for r in place.expectations.itertuples(index=False)
        ],
        summary=f"What the atlas measured at each nearest level ({len(place.expectations)} rows)",
        numeric=[1, 3, 4, 5, 6, 7],
    )
    return {
        "missing": None,
        "estimates": estimates,
        "expected": expected if len(place.expectations) else None,
        "weakest": _weakest(place),
        "notes": place.notes,
        "words": place.words,
    }


def _weakest(place: tl.AtlasPlace) -> str:
    """One sentence: the assumption where the atlas expects the lowest edge F1, and its numbers there."""
    rows = place.expectations.dropna(subset=["edge_f1"])
    if rows.empty:
        return ""
    r = rows.loc[rows["edge_f1"].idxmin()]
    return (
        f"The weakest point is {tl.ATLAS_KNOBS[r['knob']]} (atlas level {_level(r['level'])}): there {r['method']} "
        f"recovered {place.words.targets} with accuracy {num(r['target_accuracy'])}, the graph with edge F1 "
        f"{num(r['edge_f1'])} (SHD {num(r['shd'])}), and drew a confident edge into {place.words.isolated} in "
        f"{num(100 * r['false_edge_rate'])}% of seeds."
    )


def _level(value: float) -> str:
    """An atlas level or range end as written in its config (``1000``, ``0.35``)."""
    return f"{value:g}"
