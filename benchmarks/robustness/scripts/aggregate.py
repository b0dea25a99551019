"""The robustness atlas's results: per-seed rows -> a summary table, plots, the docs block and the package summary.

Reads every cell's Parquet (rows of :data:`atlas.ROW_COLUMNS`), labels each row with the knob and
level it stands for (the base cell stands for every knob at its base level), and writes

- ``<docs>/atlas.parquet``: one row per kind, knob, level, method and seed;
- ``<docs>/summary.parquet`` and ``<docs>/summary.md``: median over seeds of each metric, the
  false-edge *rate* (share of seeds with a confident edge on the isolated variable), seeds;
- ``<docs>/<kind>_<metric>.png``: the metric against the knob's level, one panel per knob, one
  line per method (median and interquartile range over seeds);
- ``package_summary`` (CSV): the summary table that ships with crl_pipe (``crl_pipe/data/atlas.csv``),
  which the report reads to place a user's data on the atlas;
- the block of ``page`` (``docs/robustness.md``) between its ``atlas:begin`` / ``atlas:end``
  markers: the summary tables and plots, with the command that made them.
"""

from __future__ import annotations

import os
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402
from cells import BASE, cell_name  # noqa: E402

#: Summary columns (the package's ``atlas.csv``), in order.
SUMMARY_COLUMNS = [
    "kind", "axis", "level", "method", "n_seeds", "target_accuracy", "shd", "edge_precision", "edge_recall",
    "edge_f1", "f1_confident", "mcc", "false_edge_rate", "n_edges_true", "n_programs", "anchors_per_program",
]  # fmt: skip
#: Metrics drawn, per kind.
PLOTTED = {
    "screen": ["target_accuracy", "edge_f1", "shd", "false_edge", "mcc"],
    "robot": ["target_accuracy", "edge_f1", "shd", "false_edge"],
}
LABELS = {
    "target_accuracy": "target accuracy", "edge_f1": "edge F1 (all reported edges)", "shd": "SHD",
    "false_edge": "false-edge rate (isolated variable)", "mcc": "latent MCC",
}  # fmt: skip
BEGIN, END = "<!-- atlas:begin -->", "<!-- atlas:end -->"


def label_rows(rows: pd.DataFrame, config: dict) -> pd.DataFrame:
    """Each row once per (knob, level) it stands for: the base cell for every knob at its base level."""
    out = []
    for kind in rows["kind"].unique():
        part = config[kind]
        for axis, levels in part["axes"].items():
            for order, level in enumerate(levels):
                cell = BASE if level == part["base"][axis] else cell_name(axis, level)
                block = rows[(rows["kind"] == kind) & (rows["cell"] == cell)]
                out.append(block.assign(axis=axis, level=float(level), level_order=order))
    return pd.concat(out, ignore_index=True)


def summarise(table: pd.DataFrame, config: dict) -> pd.DataFrame:
    """Median over seeds per kind, knob, level and method; the false-edge rate is the mean of the 0/1 flags."""
    keys = ["kind", "axis", "level", "method"]
    medians = ["target_accuracy", "shd", "edge_precision", "edge_recall", "edge_f1", "f1_confident", "mcc"]
    grouped = table.groupby(keys, sort=False)
    summary = grouped[medians + ["n_edges_true"]].median().join(grouped["false_edge"].mean().rename("false_edge_rate"))
    summary = summary.join(grouped["seed"].nunique().rename("n_seeds")).reset_index()
    sizes = {k: config[k]["base"].get("n_programs", config[k]["base"].get("n_joints")) for k in ("screen", "robot")
             if k in config}  # fmt: skip
    summary["n_programs"] = summary["kind"].map(sizes).astype(float)
    anchors = {k: config[k]["base"].get("anchors_per_program", np.nan) for k in ("screen", "robot") if k in config}
    summary["anchors_per_program"] = summary["kind"].map(anchors).astype(float)
    return summary[SUMMARY_COLUMNS]


def plot(table: pd.DataFrame, kind: str, metric: str, out: Path) -> Path:
    """``metric`` against each knob's level (one panel per knob), a line per method: median and IQR over seeds."""
    rows = table[table["kind"] == kind]
    axes_names = list(dict.fromkeys(rows["axis"]))
    ncols = min(len(axes_names), 3)
    nrows = int(np.ceil(len(axes_names) / ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.2 * ncols, 3.2 * nrows), squeeze=False, sharey=True)
    methods = list(dict.fromkeys(rows["method"]))
    palette = dict(zip(methods, sns.color_palette("colorblind", len(methods)), strict=True))
    for ax, axis in zip(axes.flat, axes_names, strict=False):
        sub = rows[rows["axis"] == axis].sort_values("level_order")
        sub = sub.assign(level_str=sub["level"].map(_fmt_level))
        order = list(dict.fromkeys(sub["level_str"]))
        estimator = "mean" if metric == "false_edge" else "median"
        errorbar = None if metric == "false_edge" else ("pi", 50)
        dodge = 0.3 if len(methods) > 1 else False  # seaborn divides by the hue levels - 1
        sns.pointplot(
            data=sub.dropna(subset=[metric]), x="level_str", y=metric, hue="method", order=order, hue_order=methods,
            palette=palette, estimator=estimator, errorbar=errorbar, dodge=dodge, ax=ax, markersize=4, linewidth=1.2,
        )  # fmt: skip
        ax.set_title(axis, fontsize=10)
        ax.set_xlabel("")
        ax.set_ylabel(LABELS[metric] if ax in axes[:, 0] else "")
        if ax.get_legend() is not None:
            ax.get_legend().remove()
    for ax in list(axes.flat)[len(axes_names) :]:
        ax.set_visible(False)
    handles = [plt.Line2D([], [], color=palette[m], marker="o", label=m) for m in methods]
    fig.legend(handles=handles, loc="upper right", frameon=False)
    fig.suptitle(f"{kind}: {LABELS[metric]}", x=0.02, ha="left")
    fig.tight_layout(rect=(0, 0, 0.92, 1))
    path = out / f"{kind}_{metric}.png"
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def markdown(summary: pd.DataFrame) -> str:
    """One markdown table per kind: knob, level, method and the medians."""
    cols = ["target_accuracy", "shd", "edge_precision", "edge_recall", "edge_f1", "f1_confident", "mcc",
            "false_edge_rate"]  # fmt: skip
    out = []
    for kind, block in summary.groupby("kind", sort=False):
        head = ["knob", "level", "method", *[c.replace("_", " ") for c in cols], "seeds"]
        out += [f"\n**{kind}**\n", "| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
        for r in block.itertuples(index=False):
            values = [_fmt(getattr(r, c)) for c in cols]
            out.append("| " + " | ".join([r.axis, _fmt_level(r.level), r.method, *values, str(r.n_seeds)]) + " |")
    return "\n".join(out) + "\n"


def aggregate(files: list[str], config: dict) -> pd.DataFrame:
    """Write every output of the atlas from the cells' Parquet files ``files`` (module docstring)."""
    rows = pd.concat([pd.read_parquet(f) for f in files], ignore_index=True)
    table = label_rows(rows, config)
    summary = summarise(table, config)
    docs = Path(config["docs"])
    docs.mkdir(parents=True, exist_ok=True)
    table.drop(columns="level_order").to_parquet(docs / "atlas.parquet", index=False)
    summary.to_parquet(docs / "summary.parquet", index=False)
    (docs / "summary.md").write_text(markdown(summary), encoding="utf-8")
    pngs = [plot(table, kind, m, docs) for kind in table["kind"].unique() for m in PLOTTED[kind]]
    package = Path(config["package_summary"])
    package.parent.mkdir(parents=True, exist_ok=True)
    summary.round(4).to_csv(package, index=False)
    page = Path(config.get("page", ""))
    if config.get("page") and page.exists():
        _write_block(page, config, summary, pngs)
    return summary


def _write_block(page: Path, config: dict, summary: pd.DataFrame, pngs: list[Path]) -> None:
    text = page.read_text(encoding="utf-8")
    if BEGIN not in text or END not in text:
        return
    rel = [os.path.relpath(p, page.parent) for p in pngs]
    command = config.get("command") or (
        "OMP_NUM_THREADS=1 nice -n 10 snakemake -s benchmarks/robustness/Snakefile "
        f"--configfile benchmarks/robustness/config/{config['name']}.yaml --cores 1"
    )
    block = [
        BEGIN,
        f"\nGenerated by `benchmarks/robustness/scripts/aggregate.py` from the **{config['name']}** config "
        f"({len(config['seeds'])} seeds, {config['n_refits']} half-sample refits per graph). Made with:\n",
        f"```\n{command}\n```\n",
        *[f"![{Path(p).stem}]({r})\n" for p, r in zip(pngs, rel, strict=True)],
        "Medians over seeds (false-edge rate: share of seeds with a confident edge on the isolated variable):",
        markdown(summary),
        END,
    ]
    head, rest = text.split(BEGIN, 1)
    tail = rest.split(END, 1)[1]
    page.write_text(head + "\n".join(block) + tail, encoding="utf-8")


def _fmt_level(level: float) -> str:
    return str(int(level)) if float(level).is_integer() else f"{level:g}"


def _fmt(value) -> str:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return "-"
    value = float(value)
    if value.is_integer():
        return str(int(value))
    return f"{value:.2f}"
