"""Rule build_anchors -> crl_pipe.pipeline.anchors."""

from crl_pipe._snakemake import run_step
from crl_pipe.pipeline import anchors

smk = snakemake  # noqa: F821 (set by Snakemake)
run_step(
    smk,
    anchors,
    preprocessed=smk.input.preprocessed,
    out=smk.output.anchors,
    gene_sets=smk.input.get("gene_sets"),
    min_anchors=smk.params.min_anchors,
    exclusive=smk.params.exclusive,
    n_programs=smk.params.n_programs,
    kind=smk.params.kind,
)
