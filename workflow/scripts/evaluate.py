"""Rule evaluate -> crl_pipe.pipeline.evaluate."""

from crl_pipe._snakemake import run_step
from crl_pipe.pipeline import evaluate

smk = snakemake  # noqa: F821 (set by Snakemake)
run_step(
    smk,
    evaluate,
    graph=smk.input.graph,
    targets=smk.input.targets,
    latents=smk.input.latents,
    out=smk.output.metrics,
    truth={
        kind: smk.input.get(f"truth_{kind}") for kind in ("graph", "targets", "latents", "hierarchy", "module_graph")
    },
    predictions=smk.input.get("predictions"),
    single_scores=smk.input.get("single_scores"),
    hierarchy={
        name: smk.input.get(f"hierarchy_{name}")
        for name in ("hierarchy", "module_graph", "graph_given_modules")
        if smk.input.get(f"hierarchy_{name}")
    },
)
