"""Section "Metrics": every model and baseline scored against the ground truth, with what each metric means."""

from __future__ import annotations

from ...pl._common import ordered_unique
from .._blocks import Table
from .._format import num
from .._inputs import ReportInputs

#: What a metric means and which way is better, matched on the lower-cased metric name.
METRIC_HELP: list[tuple[str, str]] = [
    (
        "heldout_r2_delta",
        "held-out combinations: R² of predicted vs observed changes from the control mean of the "
        "20 most changed genes; 1 = perfect; the baselines: Held-out combinations below",
    ),
    (
        "heldout_r2",
        "held-out combinations: R² of predicted vs observed mean expression (all genes, or the 20 most "
        "changed); 1 = perfect; the baselines: Held-out combinations below",
    ),
    ("heldout_single_n_labels", "held-out singles scored (averaged in the heldout_single_ rows)"),
    (
        "heldout_single_pearson",
        "held-out singles, predicted from prior knowledge: Pearson correlation of predicted vs observed changes "
        "(all genes, or the 20 most changed); 1 = perfect; the baselines: What if",
    ),
    ("heldout_single_r2", "held-out singles: R² of predicted vs observed changes; 1 = perfect; baselines: What if"),
    ("heldout_n_labels", "held-out combinations scored (averaged in the heldout_ rows)"),
    (
        "r2_offdiag",
        "largest R² of a latent with a true variable other than its own; low = disentangled "
        "(a true variable driven by another raises it legitimately)",
    ),
    ("r2_diag", "mean R² of each latent with its matched true variable; 1 = perfect"),
    ("mcc", "mean correlation between recovered and true programs after matching; 1 = perfect"),
    ("instantaneous_recall", "fraction of the true instantaneous (lag-0) edges recovered as lag-0 edges; 1 = perfect"),
    ("instantaneous_precision", "fraction of the recovered lag-0 edges that are true lag-0 edges; 1 = perfect"),
    ("module_ari", "adjusted Rand index of the programs' modules against the true ones; 1 = perfect, 0 = chance"),
    ("n_modules", "modules the hierarchy kept (minimum description length)"),
    ("level3_ari", "adjusted Rand index of the modules' level-3 groups against the true ones; 1 = perfect"),
    ("module_shd", "structural Hamming distance of the module graph to the true one; 0 = perfect"),
    ("program_shd_one_level", "SHD of the program graph read at one level (module effects drawn as edges)"),
    ("program_shd_given_modules", "SHD of the program graph given the modules (edges a module explains removed)"),
    (
        "heldout_rollout_rmse",
        "held-out episodes: RMSE of open-loop rollouts (channel SDs) at 1/10/30 frames; suffixes: baselines",
    ),
    ("heldout_n_episodes", "held-out episodes scored (their frames left every fit)"),
    (
        "shd_confident",
        "structural Hamming distance of the confident edges alone (tentative ones left out); 0 = perfect",
    ),
    ("n_edges_confident", "edges called confident (the findings to trust)"),
    ("precision_confident", "fraction of the confident edges that are true; 1 = perfect"),
    ("recall_confident", "fraction of true edges recovered as confident edges; 1 = perfect"),
    ("shd", "structural Hamming distance to the true graph (edges to add, remove or flip); 0 = perfect"),
    ("target", "fraction of perturbations assigned to their true program; 1 = perfect"),
    ("mmd", "maximum mean discrepancy between predicted and held-out cells; 0 = perfect"),
    ("auroc", "area under the ROC curve of edge scores against true edges; 1 = perfect, 0.5 = chance"),
    ("auprc", "area under the precision-recall curve of edge scores; 1 = perfect"),
    ("precision", "fraction of recovered edges that are true; 1 = perfect"),
    ("recall", "fraction of true edges recovered; 1 = perfect"),
    ("f1", "harmonic mean of edge precision and recall; 1 = perfect"),
]


def metrics_table(inputs: ReportInputs) -> Table | None:
    """One row per metric, one column per model or baseline with metrics; ``None`` when none has any."""
    with_metrics = [m for m in inputs.fitted if m.metrics is not None and len(m.metrics)]
    if not with_metrics:
        return None
    names: list[str] = []
    for m in with_metrics:
        names += [n for n in ordered_unique(m.metrics["metric"]) if n not in set(names)]
    values = {m.name: m.metrics.groupby("metric", sort=False)["value"].mean() for m in with_metrics}
    # the held-out baselines have their own table (Held-out combinations); one row per model score here
    baselines = ("_control", "_additive", "_no_change", "_mean_change", "_linear_embedding")
    names = [n for n in names if not (n.startswith("heldout_") and n.endswith(baselines))]
    rows = [[name, *[num(values[m.name].get(name)) for m in with_metrics], metric_help(name)] for name in names]
    return Table(
        ["metric", *[m.name for m in with_metrics], "what it means"],
        rows,
        numeric=list(range(1, len(with_metrics) + 1)),
    )


def metric_help(name: str) -> str:
    """What the metric ``name`` means (first :data:`METRIC_HELP` pattern in its lower-cased name)."""
    key = name.lower()
    return next((text for pattern, text in METRIC_HELP if pattern in key), "")
