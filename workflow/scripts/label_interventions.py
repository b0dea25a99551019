"""Rule label_interventions -> crl_pipe.pipeline.label."""

from crl_pipe._snakemake import run_step
from crl_pipe.pipeline import label

smk = snakemake  # noqa: F821 (set by Snakemake)
run_step(
    smk,
    label,
    ingested=smk.input.ingested,
    out=smk.output.interventions,
    kind=smk.params.kind,
    options=smk.params.options,
)
