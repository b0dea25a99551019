"""A table of measured variables: one row per sample, one column per variable, 0/1 intervention columns.

``kind: screen`` with ``format: table`` (e.g. the Sachs 2005 flow cytometry of ``config/sachs.yaml``).
The variables are the causal variables themselves: each anchors itself unless gene sets group
them; the interventions are the active indicator columns of a row, mapped to the variables they
are known to act on (``interventions.targets``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from ._base import DatasetKind, GeneSets, PathLike
from ._screen import label_cells
from ._vocabulary import SCREEN

if TYPE_CHECKING:
    import anndata as ad
    import pandas as pd


class TableKind(DatasetKind):
    """Observed variables with intervention indicator columns (``kind: screen``, ``format: table``)."""

    name = "table"
    config_kind = "screen"
    formats = ("table",)
    vocabulary = SCREEN
    truth = {
        "graph": "edges among the measured variables (source, target, weight)",
        "targets": "each intervention and the variable(s) it acts on",
        "latents": "each sample's true variable values",
    }

    # ---- config side
    def ingest_options(self, dataset: Mapping[str, Any]) -> dict[str, Any]:
        columns = {"interventions": dataset["interventions"]["columns"]}
        return columns | ({"variables": dataset["variables"]} if "variables" in dataset else {})

    def label_options(self, dataset: Mapping[str, Any], config: Mapping[str, Any]) -> dict[str, Any]:
        return {
            "min_cells": config["labels"]["min_cells"],
            "target_map": dict(dataset["interventions"].get("targets", {})),
        }

    def preprocess_options(self, dataset: Mapping[str, Any], config: Mapping[str, Any]) -> dict[str, Any]:
        return {"transform": dataset.get("transform", "none"), "cofactor": dataset.get("cofactor", 5)}

    # ---- data side
    def read(
        self,
        path: PathLike,
        *,
        format: str = "table",
        interventions: str | Sequence[str],
        variables: Sequence[str] | None = None,
    ) -> ad.AnnData:
        from .. import io  # data side: loads anndata, kept out of the Snakemake process

        return io.read_variable_table(path, interventions=interventions, variables=variables)

    def label(
        self, ingested: PathLike, *, min_cells: int = 1, target_map: Mapping[str, Sequence[str]] | None = None
    ) -> tuple[pd.DataFrame, dict[str, Any]]:
        from ..io._variables import CONTROL_LABEL, LABEL_KEY  # data side, as above

        return label_cells(
            ingested,
            perturbation_key=LABEL_KEY,
            control_values=[CONTROL_LABEL],
            min_cells=min_cells,
            target_map=target_map,
        )

    def preprocess(
        self,
        adata: ad.AnnData,
        labels: pd.DataFrame,
        *,
        gene_sets: GeneSets | None = None,
        transform: str = "none",
        cofactor: float = 5.0,
    ) -> ad.AnnData:
        from .. import pp  # data side, as above

        return pp.preprocess_table(adata, labels, transform=transform, cofactor=cofactor)

    def anchors(
        self,
        adata: ad.AnnData,
        gene_sets: GeneSets | None,
        *,
        min_anchors: int = 2,
        exclusive: bool = True,
        n_programs: int | None = None,
    ) -> tuple[pd.DataFrame, pd.DataFrame | None]:
        from .. import pp  # data side, as above

        if gene_sets:
            return pp.build_anchors(adata, gene_sets, min_anchors=min_anchors, exclusive=exclusive)
        return pp.identity_anchors(adata), None
