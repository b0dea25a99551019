"""Rule train_model -> crl_pipe.pipeline.train."""

from crl_pipe._snakemake import run_step
from crl_pipe.pipeline import train

smk = snakemake  # noqa: F821 (set by Snakemake)
run_step(
    smk,
    train,
    preprocessed=smk.input.preprocessed,
    interventions=smk.input.interventions,
    anchors=smk.input.anchors,
    out_dir=smk.params.out_dir,
    model=smk.wildcards.model,
    params=smk.params.model_params,
    seed=smk.params.seed,
    threads=smk.threads,
    require_device=smk.params.require_device,
    held_out=smk.params.held_out,
)
