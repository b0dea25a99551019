"""Rule preprocess -> crl_pipe.pipeline.preprocess."""

from crl_pipe._snakemake import run_step
from crl_pipe.pipeline import preprocess

smk = snakemake  # noqa: F821 (set by Snakemake)
run_step(
    smk,
    preprocess,
    ingested=smk.input.ingested,
    interventions=smk.input.interventions,
    out=smk.output.h5ad,
    gene_sets=smk.input.get("gene_sets"),
    kind=smk.params.kind,
    options=smk.params.options,
)
