"""Rule simulate_screen -> crl_pipe.pipeline.simulate."""

from crl_pipe._snakemake import run_step
from crl_pipe.pipeline import simulate

smk = snakemake  # noqa: F821 (set by Snakemake)
run_step(
    smk,
    simulate,
    out_h5ad=smk.output.screen,
    out_gmt=smk.output.gene_sets,
    out_truth_dir=smk.params.truth_dir,
    params=smk.params.simulation,
)
