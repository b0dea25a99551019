"""Rule simulate_module_truth -> crl_pipe.pipeline.simulate_modules."""

from crl_pipe._snakemake import run_step
from crl_pipe.pipeline import simulate_modules

smk = snakemake  # noqa: F821 (set by Snakemake)
run_step(smk, simulate_modules, out_truth_dir=smk.params.truth_dir, params=smk.params.simulation)
