"""Rule ingest -> crl_pipe.pipeline.ingest."""

from crl_pipe._snakemake import run_step
from crl_pipe.pipeline import ingest

smk = snakemake  # noqa: F821 (set by Snakemake)
run_step(
    smk,
    ingest,
    path=smk.input.raw,
    out_h5ad=smk.output.h5ad,
    out_qc=smk.output.qc,
    out_guides=smk.output.guides,
    format=smk.params.format,
    options=smk.params.options,
    guide_calling=smk.params.guide_calling,
    kind=smk.params.kind,
)
