"""Rule simulate_robot -> crl_pipe.pipeline.simulate_robot."""

from crl_pipe._snakemake import run_step
from crl_pipe.pipeline import simulate_robot

smk = snakemake  # noqa: F821 (set by Snakemake)
run_step(
    smk,
    simulate_robot,
    out_dir=smk.output.dataset,
    out_truth_dir=smk.params.truth_dir,
    params=smk.params.simulation,
)
