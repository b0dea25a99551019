"""Rule recover_graph -> crl_pipe.pipeline.graph."""

from crl_pipe._snakemake import run_step
from crl_pipe.pipeline import graph

smk = snakemake  # noqa: F821 (set by Snakemake)
run_step(
    smk,
    graph,
    preprocessed=smk.input.preprocessed,
    interventions=smk.input.interventions,
    anchors=smk.input.anchors,
    model_dir=smk.params.model_dir,
    out_parquet=smk.output.graph,
    out_graphml=smk.output.graphml,
    n_refits=smk.params.n_refits,
    seed=smk.params.seed,
    held_out=smk.params.held_out,
    min_stability=smk.params.min_stability,
    min_weight_z=smk.params.min_weight_z,
    min_orientation=smk.params.min_orientation,
)
