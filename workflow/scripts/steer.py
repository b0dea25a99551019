"""Rule steer -> crl_pipe.pipeline.steer."""

from crl_pipe._snakemake import run_step
from crl_pipe.pipeline import steer

smk = snakemake  # noqa: F821 (set by Snakemake)
run_step(
    smk,
    steer,
    preprocessed=smk.input.preprocessed,
    interventions=smk.input.interventions,
    anchors=smk.input.anchors,
    model_dir=smk.params.model_dir,
    out=smk.output.steering,
    out_singles=smk.output.singles,
    requests=smk.params.requests,
    held_out=smk.params.held_out,
    n_boot=smk.params.n_boot,
    level=smk.params.level,
    seed=smk.params.seed,
    hierarchy=smk.input.get("hierarchy"),
)
