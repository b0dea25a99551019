"""Rule learn_hierarchy -> crl_pipe.pipeline.hierarchy."""

from crl_pipe._snakemake import run_step
from crl_pipe.pipeline import hierarchy

smk = snakemake  # noqa: F821 (set by Snakemake)
run_step(
    smk,
    hierarchy,
    latents=smk.input.latents,
    interventions=smk.input.interventions,
    anchors=smk.input.anchors,
    out_hierarchy=smk.output.hierarchy,
    out_modules=smk.output.modules,
    out_module_graph=smk.output.module_graph,
    out_program_graph=smk.output.graph_given_modules,
    out_summary=smk.output.summary,
    given=smk.params.given,
    n_resamples=smk.params.n_resamples,
    max_level=smk.params.max_level,
    seed=smk.params.seed,
    kind=smk.params.kind,
)
