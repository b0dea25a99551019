"""Rule evaluate_baseline -> crl_pipe.pipeline.evaluate_baseline."""

from crl_pipe._snakemake import run_step
from crl_pipe.pipeline import evaluate_baseline

smk = snakemake  # noqa: F821 (set by Snakemake)
run_step(
    smk,
    evaluate_baseline,
    graph=smk.input.graph,
    truth_graph=smk.input.truth_graph,
    out=smk.output.metrics,
)
