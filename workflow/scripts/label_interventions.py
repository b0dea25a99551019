"""Rule label_interventions -> crl_pipe.pipeline.label."""

from crl_pipe._snakemake import run_step
from crl_pipe.pipeline import label

smk = snakemake  # noqa: F821 (set by Snakemake)
run_step(
    smk,
    label,
    ingested=smk.input.ingested,
    out=smk.output.interventions,
    perturbation_key=smk.params.perturbation_key,
    control_values=smk.params.control_values,
    min_cells=smk.params.min_cells,
    kind=smk.params.kind,
    robot_labels=smk.params.robot_labels,
    target_map=smk.params.target_map,
)
