"""Rule predict_held_out -> crl_pipe.pipeline.predict."""

from crl_pipe._snakemake import run_step
from crl_pipe.pipeline import predict

smk = snakemake  # noqa: F821 (set by Snakemake)
run_step(
    smk,
    predict,
    preprocessed=smk.input.preprocessed,
    interventions=smk.input.interventions,
    anchors=smk.input.anchors,
    model_dir=smk.params.model_dir,
    out=smk.output.predictions,
    held_out=smk.params.held_out,
    seed=smk.params.seed,
)
