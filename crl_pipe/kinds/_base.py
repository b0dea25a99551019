"""The interface of a dataset kind, and the stage bodies every kind shares.

A kind says, for one sort of dataset, what each stage does with it: how its raw input is read
(and its guides called), how its interventions are labelled, how it is preprocessed, which
features anchor its latents, what its truth files hold, and the words and sections of its report.

One class, two sides:

- the **config side** (``*_options``, ``guide_calling``, ``ingest_files``, ``report_files``) maps
  the validated dataset config to each stage's settings and extra input files. ``rules/common.smk``
  calls it in the Snakemake process on every invocation, so it is plain Python on mappings;
- the **data side** (``read``, ``call_guides``, ``label``, ``preprocess``, ``anchors``) works in
  memory; the ``write_*`` methods, which :mod:`crl_pipe.pipeline` calls, wrap it into stages
  (file in, file out, with provenance). It needs :mod:`crl_pipe.io` and :mod:`crl_pipe.pp`, which
  load anndata (seconds): each data-side method imports them itself, so that importing a kind
  costs no more than its config side.
"""

from __future__ import annotations

import inspect
import logging
import os
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, ClassVar

from .._errors import ConfigError
from .._provenance import provenance
from ._vocabulary import Vocabulary

if TYPE_CHECKING:
    import anndata as ad
    import pandas as pd

log = logging.getLogger("crl_pipe")

PathLike = str | os.PathLike
#: Program name -> its genes (or variables), as :func:`crl_pipe.io.read_gmt` returns them.
GeneSets = Mapping[str, list[str]]


class DatasetKind(ABC):
    """One kind of dataset (a screen of counts, a table of measured variables, a robot log, ...).

    A subclass sets the class attributes, implements the four abstract data-side methods, and
    overrides the config-side methods whose settings it reads; it is registered by name in
    :mod:`crl_pipe.kinds` (:func:`crl_pipe.kinds.register_kind`). A dataset config selects the kind
    whose :attr:`config_kind` is its ``kind`` (default ``screen``) and whose :attr:`formats` hold
    its ``format`` (:func:`crl_pipe.kinds.kind_of`).
    """

    #: Registry name, the ``kind`` argument of the stage functions of :mod:`crl_pipe.pipeline`.
    name: ClassVar[str]
    #: The value of ``datasets.<name>.kind`` that selects this kind (together with a format).
    config_kind: ClassVar[str]
    #: The values of ``datasets.<name>.format`` this kind reads.
    formats: ClassVar[tuple[str, ...]]
    #: The words the report uses for this kind (samples, features, labels), and sections it omits.
    vocabulary: ClassVar[Vocabulary]
    #: Truth file (a key of ``datasets.<name>.truth``) -> what it holds for this kind.
    truth: ClassVar[Mapping[str, str]] = {}

    def __repr__(self) -> str:
        return f"<dataset kind {self.name!r}: kind {self.config_kind!r}, formats {list(self.formats)}>"

    # ---- config side: the validated dataset config -> settings and files of each stage -----------
    def ingest_options(self, dataset: Mapping[str, Any]) -> dict[str, Any]:
        """Reader options of the dataset (``options`` of :func:`crl_pipe.pipeline.ingest`): only
        those set, so that the reader's defaults stay its own."""
        return {}

    def ingest_files(self, options: Mapping[str, Any]) -> dict[str, str]:
        """The input files among the reader ``options`` (role -> path): rule ``ingest`` reruns when
        they change, and the provenance hashes them."""
        return {}

    def guide_calling(self, dataset: Mapping[str, Any]) -> dict[str, Any]:
        """How guides are called in ingest (``guide_calling`` of :func:`crl_pipe.pipeline.ingest`);
        ``{}`` for formats that carry no guides."""
        return {}

    def label_options(self, dataset: Mapping[str, Any], config: Mapping[str, Any]) -> dict[str, Any]:
        """Settings of :meth:`label` (``options`` of :func:`crl_pipe.pipeline.label`)."""
        return {}

    def preprocess_options(self, dataset: Mapping[str, Any], config: Mapping[str, Any]) -> dict[str, Any]:
        """Settings of :meth:`preprocess` (``options`` of :func:`crl_pipe.pipeline.preprocess`)."""
        return {}

    def report_files(self, folder: str) -> dict[str, str]:
        """Extra artifacts of the dataset's results ``folder`` that its report reads (role -> path)."""
        return {}

    def has_report_section(self, section: str) -> bool:
        """Whether this kind's report shows ``section`` (a key of the report's sections)."""
        return section not in self.vocabulary.omitted_sections

    # ---- data side, in memory ----------------------------------------------------------------------
    @abstractmethod
    def read(self, path: PathLike, *, format: str, **options: Any) -> ad.AnnData:
        """The raw input at ``path``, in ``format``, as the canonical ``ingested.h5ad`` AnnData."""

    def call_guides(self, adata: ad.AnnData, calling: dict[str, Any], *, format: str, path: PathLike) -> pd.DataFrame:
        """Guide calls of an input that carries guide counts (``guides.parquet``; may add the labels
        to ``adata.obs``); by default none: an empty table, so that every dataset has the artifact."""
        return no_guides()

    @abstractmethod
    def label(self, ingested: PathLike, **options: Any) -> tuple[pd.DataFrame, dict[str, Any]]:
        """The ``interventions`` table of the ingested h5ad at ``ingested``, and the settings used
        (recorded in its provenance; e.g. a perturbation column found by detection)."""

    @abstractmethod
    def preprocess(
        self, adata: ad.AnnData, labels: pd.DataFrame, *, gene_sets: GeneSets | None, **options: Any
    ) -> ad.AnnData:
        """The model-ready ``preprocessed.h5ad`` of the ingested ``adata`` and its ``labels``."""

    @abstractmethod
    def anchors(
        self,
        adata: ad.AnnData,
        gene_sets: GeneSets | None,
        *,
        min_anchors: int,
        exclusive: bool,
        n_programs: int | None,
    ) -> tuple[pd.DataFrame, pd.DataFrame | None]:
        """The ``anchors`` table of the preprocessed ``adata``, and the programs dropped (with a
        ``reason``; ``None`` when none can be)."""

    def hierarchy_samples(
        self, latents: pd.DataFrame, interventions: pd.DataFrame
    ) -> tuple[pd.DataFrame, pd.DataFrame]:
        """The samples and labels the concept hierarchy reads (:func:`crl_pipe.tl.hierarchy`), from
        ``latents.parquet`` and ``interventions.parquet``: by default the latents as they are, each
        perturbation a group of samples shifted from the controls."""
        return latents, interventions

    # ---- the stages: file in, file out (crl_pipe.pipeline delegates here) --------------------------
    def write_ingested(
        self,
        path: PathLike,
        *,
        out_h5ad: PathLike,
        out_qc: PathLike,
        out_guides: PathLike | None = None,
        format: str,
        options: Mapping[str, Any] | None = None,
        guide_calling: Mapping[str, Any] | None = None,
    ) -> None:
        """Read ``path`` (:meth:`read`), call its guides (:meth:`call_guides`) and measure its QC;
        write ``ingested.h5ad``, ``qc.parquet`` and ``guides.parquet``."""
        from .. import pp  # data side (see the module docstring)
        from ..io import write_h5ad, write_table  # data side (see the module docstring)

        options, calling = dict(options or {}), dict(guide_calling or {})
        check_options(self.read, options, "reader", skip={"format"})
        adata = self.read(path, format=format, **options)
        prov = self.ingest_provenance(path, format, options, calling)
        calls = self.call_guides(adata, dict(calling), format=format, path=path)
        qc = pp.qc_metrics(adata)
        # the large file first: a failure while writing it leaves no small artifact claiming success
        write_h5ad(adata, out_h5ad, prov)
        write_table(qc, out_qc, "qc", prov)
        if out_guides is not None:
            write_table(calls, out_guides, "guides", prov)

    def ingest_provenance(
        self, path: PathLike, format: str, options: Mapping[str, Any], calling: Mapping[str, Any]
    ) -> dict[str, Any]:
        """Provenance of the ingest artifacts: the input and reader files, format, options, guide calling."""
        files = {"input": path, **self.ingest_files(options)}
        return provenance("ingest", files, {"format": format, **options, "guide_calling": dict(calling)})

    def write_interventions(
        self, ingested: PathLike, *, out: PathLike, options: Mapping[str, Any] | None = None
    ) -> None:
        """Label the interventions of ``ingested`` (:meth:`label`) into ``interventions.parquet``."""
        from ..io import write_table  # data side (see the module docstring)

        options = dict(options or {})
        check_options(self.label, options, "label")
        table, params = self.label(ingested, **options)
        prov = provenance("label", {"ingested": ingested}, {"kind": self.config_kind, **params})
        write_table(table, out, "interventions", prov)

    def write_preprocessed(
        self,
        ingested: PathLike,
        interventions: PathLike,
        *,
        out: PathLike,
        gene_sets: PathLike | None = None,
        options: Mapping[str, Any] | None = None,
    ) -> None:
        """Preprocess ``ingested`` with its labels (:meth:`preprocess`) into ``preprocessed.h5ad``."""
        from ..io import read_gmt, read_h5ad, read_table, write_h5ad  # data side (see the module docstring)

        options = dict(options or {})
        check_options(self.preprocess, options, "preprocess", skip={"gene_sets"})
        adata = read_h5ad(ingested)
        labels = read_table(interventions, "interventions")
        result = self.preprocess(adata, labels, gene_sets=read_gmt(gene_sets) if gene_sets else None, **options)
        write_h5ad(result, out, self.preprocess_provenance(ingested, interventions, gene_sets, options))

    def preprocess_provenance(
        self, ingested: PathLike, interventions: PathLike, gene_sets: PathLike | None, options: Mapping[str, Any]
    ) -> dict[str, Any]:
        """Provenance of ``preprocessed.h5ad``: its inputs and the preprocess options."""
        inputs = {"ingested": ingested, "interventions": interventions, "gene_sets": gene_sets}
        return provenance("preprocess", inputs, options)

    def write_anchors(
        self,
        preprocessed: PathLike,
        *,
        out: PathLike,
        gene_sets: PathLike | None = None,
        min_anchors: int = 2,
        exclusive: bool = True,
        n_programs: int | None = None,
    ) -> None:
        """Anchor the latents of ``preprocessed`` (:meth:`anchors`) into ``anchors.parquet``; the
        dropped programs are logged and kept in its provenance."""
        from ..io import read_gmt, storage_for, write_table  # data side (see the module docstring)

        params = {
            "min_anchors": min_anchors,
            "exclusive": exclusive,
            "n_programs": n_programs,
            "kind": self.config_kind,
        }
        # a large screen stays on disk: gene sets need the gene names, data-driven programs a sample of cells
        adata = storage_for(preprocessed).read(preprocessed, backed=True)
        sets = read_gmt(gene_sets) if gene_sets else None
        table, dropped = self.anchors(adata, sets, min_anchors=min_anchors, exclusive=exclusive, n_programs=n_programs)
        prov = provenance("anchors", {"preprocessed": preprocessed, "gene_sets": gene_sets}, params)
        prov["dropped_programs"] = [] if dropped is None else dropped.to_dict(orient="records")
        for rec in prov["dropped_programs"]:
            log.warning("program %s dropped: %s", rec["program"], rec["reason"])
        write_table(table, out, "anchors", prov)


def no_guides() -> pd.DataFrame:
    """The ``guides`` table of a dataset without guide counts: no rows."""
    import pandas as pd  # data side (see the module docstring)

    return pd.DataFrame({"sample_id": [], "guide": [], "umis": [], "called": []}).astype({"called": bool})


def check_options(method: Callable[..., Any], options: Mapping[str, Any], what: str, skip: set[str] = set()) -> None:  # noqa: B006 (read only)
    """One-line :class:`ConfigError` for options a kind's ``method`` does not take (unless it takes any)."""
    params = inspect.signature(method).parameters.values()
    if any(p.kind is p.VAR_KEYWORD for p in params):
        return
    accepted = sorted(p.name for p in params if p.kind is p.KEYWORD_ONLY and p.name not in skip)
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        kind = getattr(getattr(method, "__self__", None), "name", "?")
        raise ConfigError(f"kind {kind!r}: {what} option(s) {unknown} not understood; expected one of {accepted}")
