"""Rule collect_benchmark -> crl_pipe.pipeline.collect_benchmark."""

from crl_pipe._snakemake import run_step
from crl_pipe.pipeline import collect_benchmark

smk = snakemake  # noqa: F821 (set by Snakemake)
run_step(
    smk,
    collect_benchmark,
    metrics=dict(zip(smk.params.runs, smk.input.metrics, strict=True)),
    out=smk.output.benchmark,
)
