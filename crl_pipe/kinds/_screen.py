"""A screen of counts: cells x genes of raw UMI counts, one perturbation label per cell.

Formats: ``h5ad`` (labels in ``obs``), ``guide_counts`` (an expression matrix and a guide UMI
count matrix) and ``10x`` (a Cell Ranger run with CRISPR Guide Capture); for the last two the
guides are called in ingest. Preprocessing normalises, log-transforms and selects genes; anchors
come from gene sets, or from the data. A screen larger than memory is ingested and preprocessed
in blocks of cells (:class:`crl_pipe.io.Storage`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from .._errors import InputError
from ._base import DatasetKind, GeneSets, PathLike, check_options, no_guides
from ._vocabulary import SCREEN

if TYPE_CHECKING:
    import anndata as ad
    import pandas as pd  # data side, as above

#: Input formats that carry guide UMI counts: their guides are called in ingest.
GUIDE_FORMATS = ("guide_counts", "10x")
#: Reader options that name files (the guide counts, the guide -> target map, Cell Ranger's feature reference).
_GUIDE_FILES = ("guides", "guide_map", "feature_reference")


class ScreenKind(DatasetKind):
    """A perturbation screen of raw counts (``kind: screen``, format ``h5ad``, ``guide_counts`` or ``10x``)."""

    name = "screen"
    config_kind = "screen"
    formats = ("h5ad", "guide_counts", "10x")
    vocabulary = SCREEN
    truth = {
        "graph": "edges among the latent programs (source, target, weight)",
        "targets": "each intervention and the program(s) it acts on",
        "latents": "each cell's true program activities",
    }

    # ---- config side
    def ingest_options(self, dataset: Mapping[str, Any]) -> dict[str, Any]:
        return {key: dataset[key] for key in ("counts_layer", *_GUIDE_FILES) if key in dataset}

    def ingest_files(self, options: Mapping[str, Any]) -> dict[str, str]:
        return {key: options[key] for key in _GUIDE_FILES if options.get(key)}

    def guide_calling(self, dataset: Mapping[str, Any]) -> dict[str, Any]:
        return dict(dataset.get("guide_calling", {})) if dataset["format"] in GUIDE_FORMATS else {}

    def label_options(self, dataset: Mapping[str, Any], config: Mapping[str, Any]) -> dict[str, Any]:
        return {
            "perturbation_key": dataset.get("perturbation_key"),
            "control_values": list(dataset.get("control_values", [])),
            "min_cells": config["labels"]["min_cells"],
        }

    def preprocess_options(self, dataset: Mapping[str, Any], config: Mapping[str, Any]) -> dict[str, Any]:
        return {key: config["preprocess"][key] for key in ("n_top_genes", "target_sum")}

    def report_files(self, folder: str) -> dict[str, str]:
        # the report's guide and knockdown section
        return {"guides": f"{folder}/guides.parquet", "expression": f"{folder}/preprocessed.h5ad"}

    # ---- data side
    def read(self, path: PathLike, *, format: str = "h5ad", **options: Any) -> ad.AnnData:
        from .. import io  # data side: loads anndata, kept out of the Snakemake process

        return io.read_screen(path, format=format, **options)

    def call_guides(self, adata: ad.AnnData, calling: dict[str, Any], *, format: str, path: PathLike) -> pd.DataFrame:
        """Cell Ranger's own calls for a 10x run that has them (unless ``method`` says otherwise), else ours
        (:func:`crl_pipe.pp.call_guides`); none for ``h5ad``."""
        if format not in GUIDE_FORMATS:
            return no_guides()
        from .. import pp  # data side, as above
        from ..io._tenx import CALLS_FILE, CALLS_KEY  # data side, as above

        method = calling.pop("method", None)
        has_calls = CALLS_KEY in adata.obs
        if method == "cellranger" or (method is None and format == "10x" and has_calls):
            if not has_calls:
                raise InputError(
                    f"{path}: guide_calling.method is 'cellranger' but there is no crispr_analysis/{CALLS_FILE}; "
                    "expected a Cell Ranger run with guide calls, or method 'mixture' or 'threshold'"
                )
            return pp.import_guide_calls(adata)
        return pp.call_guides(adata, method=method or "mixture", **calling)

    def label(
        self,
        ingested: PathLike,
        *,
        perturbation_key: str | None = None,
        control_values: Sequence[str] = (),
        min_cells: int = 1,
        target_map: Mapping[str, Sequence[str]] | None = None,
    ) -> tuple[pd.DataFrame, dict[str, Any]]:
        return label_cells(
            ingested,
            perturbation_key=perturbation_key,
            control_values=control_values,
            min_cells=min_cells,
            target_map=target_map,
        )

    def preprocess(
        self,
        adata: ad.AnnData,
        labels: pd.DataFrame,
        *,
        gene_sets: GeneSets | None = None,
        n_top_genes: int = 2000,
        target_sum: float = 1e4,
    ) -> ad.AnnData:
        from .. import pp  # data side, as above

        return pp.preprocess(
            adata, labels, keep_genes=_members(gene_sets), n_top_genes=n_top_genes, target_sum=target_sum
        )

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
        return pp.data_driven_anchors(adata, n_programs=n_programs or 10, min_anchors=min_anchors)

    # ---- larger than memory: the stages that stream blocks of cells
    def write_ingested(
        self,
        path: PathLike,
        *,
        out_h5ad: PathLike,
        out_qc: PathLike,
        out_guides: PathLike | None = None,
        format: str = "h5ad",
        options: Mapping[str, Any] | None = None,
        guide_calling: Mapping[str, Any] | None = None,
    ) -> None:
        """As :meth:`DatasetKind.write_ingested`; an h5ad screen larger than memory block by block of cells."""
        import pandas as pd  # data side, as above

        from .. import io, pp  # data side, as above

        options = dict(options or {})
        streamable = format == "h5ad" and set(options) <= {"counts_layer"}
        if not (streamable and io.storage_for_screen(path, options.get("counts_layer")).chunked):
            super().write_ingested(
                path,
                out_h5ad=out_h5ad,
                out_qc=out_qc,
                out_guides=out_guides,
                format=format,
                options=options,
                guide_calling=guide_calling,
            )
            return
        prov = self.ingest_provenance(path, format, options, guide_calling or {})
        qc = []
        with io.ScreenChunks(path, counts_layer=options.get("counts_layer")) as screen:
            with io.write_h5ad_chunks(out_h5ad, screen.obs, screen.var, prov, max_nnz=screen.nnz(screen.key)) as out:
                for block in screen:
                    out.append(block.X)
                    qc.append(pp.qc_metrics(block))
        io.write_table(pd.concat(qc, ignore_index=True), out_qc, "qc", prov)
        if out_guides is not None:
            io.write_table(no_guides(), out_guides, "guides", prov)

    def write_preprocessed(
        self,
        ingested: PathLike,
        interventions: PathLike,
        *,
        out: PathLike,
        gene_sets: PathLike | None = None,
        options: Mapping[str, Any] | None = None,
    ) -> None:
        """As :meth:`DatasetKind.write_preprocessed`; larger than memory in two passes over blocks of cells
        (:func:`crl_pipe.pp.preprocess_chunked`)."""
        from .. import io, pp  # data side, as above

        options = dict(options or {})
        check_options(self.preprocess, options, "preprocess", skip={"gene_sets"})
        if not io.storage_for(ingested).chunked:
            super().write_preprocessed(ingested, interventions, out=out, gene_sets=gene_sets, options=options)
            return
        keep = _members(io.read_gmt(gene_sets) if gene_sets else None)
        prov = self.preprocess_provenance(ingested, interventions, gene_sets, options)
        pp.preprocess_chunked(
            ingested, io.read_table(interventions, "interventions"), out, prov, keep_genes=keep, **options
        )


def label_cells(
    ingested: PathLike,
    *,
    perturbation_key: str | None,
    control_values: Sequence[str],
    min_cells: int,
    target_map: Mapping[str, Sequence[str]] | None = None,
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Interventions of the cells of an ingested screen from its perturbation column (found by the
    conventions of :func:`crl_pipe.pp.detect_convention` where ``perturbation_key`` is ``None`` or
    ``"auto"``); ``target_map`` (label token -> variables) replaces each one's targets
    (:func:`crl_pipe.pp.map_targets`). Returns the table and the settings used."""
    from .. import pp  # data side, as above
    from ..io import read_h5ad  # data side, as above

    adata = read_h5ad(ingested, backed=True)
    if perturbation_key in (None, "auto"):  # detected here, so that the provenance names the column
        perturbation_key = pp.detect_convention(adata.obs, list(control_values), where=f"{ingested}: ").key
    controls = [control_values] if isinstance(control_values, str) else list(control_values)  # one label
    params = {"perturbation_key": perturbation_key, "control_values": controls, "min_cells": min_cells}
    table = pp.label_interventions(adata, **params)
    if target_map is not None:
        params["target_map"] = {str(k): [str(t) for t in v] for k, v in target_map.items()}
        table = pp.map_targets(table, params["target_map"])
    return table, params


def _members(gene_sets: GeneSets | None) -> list[str]:
    """Every gene of the gene sets, sorted: kept through gene selection."""
    return sorted({g for genes in (gene_sets or {}).values() for g in genes})
