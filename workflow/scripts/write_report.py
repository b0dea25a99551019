"""Rule write_report -> crl_pipe.pipeline.report."""

from crl_pipe._snakemake import run_step
from crl_pipe.pipeline import report

smk = snakemake  # noqa: F821 (set by Snakemake)
artifacts = {
    "interventions": smk.input.interventions,
    "qc": smk.input.qc,
    "anchors": smk.input.anchors,
    "models": smk.params.model_dirs,
    "baselines": smk.params.baseline_dirs,
    **{key: smk.input.get(key) for key in ("truth_graph", "guides", "expression")},  # absent: None
}
run_step(
    smk, report, dataset=smk.wildcards.dataset, out_html=smk.output.html, artifacts=artifacts, config=smk.params.config
)
