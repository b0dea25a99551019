"""Rule write_report -> crl_pipe.pipeline.report."""

from crl_pipe._snakemake import run_step
from crl_pipe.pipeline import report

smk = snakemake  # noqa: F821 (set by Snakemake)
run_step(
    smk,
    report,
    dataset=smk.wildcards.dataset,
    out_html=smk.output.html,
    interventions=smk.input.interventions,
    qc=smk.input.qc,
    anchors=smk.input.anchors,
    model_dirs=smk.params.model_dirs,
    baseline_dirs=smk.params.baseline_dirs,
    truth_graph=smk.input.get("truth_graph"),
    guides=smk.input.get("guides"),
    expression=smk.input.get("expression"),
    config=smk.params.config,
)
