"""Rule fit_baseline -> crl_pipe.pipeline.baseline."""

from crl_pipe._snakemake import run_step
from crl_pipe.pipeline import baseline

smk = snakemake  # noqa: F821 (set by Snakemake)
run_step(
    smk,
    baseline,
    preprocessed=smk.input.preprocessed,
    interventions=smk.input.interventions,
    out_parquet=smk.output.graph,
    out_graphml=smk.output.graphml,
    out_meta=smk.output.meta,
    method=smk.wildcards.baseline,
    params=smk.params.baseline_params,
    n_refits=smk.params.n_refits,
    seed=smk.params.seed,
    held_out=smk.params.held_out,
    min_stability=smk.params.min_stability,
    min_weight_z=smk.params.min_weight_z,
    min_orientation=smk.params.min_orientation,
)
