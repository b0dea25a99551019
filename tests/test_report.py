"""The HTML report: self-contained, complete, escaped, and fine without metrics or truth."""

from __future__ import annotations

import html
import json
import re
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest

from crl_pipe import InputError
from crl_pipe._constants import MISFIT_WARNING, STARVED_WARNING
from crl_pipe._provenance import provenance
from crl_pipe.io import write_table
from crl_pipe.kinds import Vocabulary
from crl_pipe.report import SECTIONS, ReportInputs, write_report

#: The sections a report without camera models shows ("frames" only comes with a model that sees frames).
SCREEN_SECTIONS = [(anchor, heading) for anchor, heading in SECTIONS if anchor != "frames"]

IMG = "<img src=x onerror=alert(1)>"
SCRIPT = "<script>alert(1)</script>"


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def make_artifacts(
    root: Path,
    *,
    genes: list[str] | None = None,
    models: dict[str, dict] | None = None,
    programs: list[str] | None = None,
    with_metrics: bool = True,
    with_truth: bool = True,
    seed: int = 0,
) -> dict:
    """Small fake stage artifacts under ``root``; returns the artifact paths of :meth:`ReportInputs.from_paths`."""
    rng = np.random.default_rng(seed)
    genes = genes or ["GATA1", "TP53", "MYC", "SPI1"]
    programs = programs or ["erythroid", "stress", "growth"]
    models = models or {"linear": {"epochs": 1, "loadings": False}, "causal_vae": {"epochs": 15, "loadings": True}}
    labels = ["control"] * 30 + [g for g in genes for _ in range(10)] + [f"{genes[0]}+{genes[1]}"] * 5
    targets = [[] if lab == "control" else lab.split("+") for lab in labels]
    cells = [f"cell{i}" for i in range(len(labels))]
    root.mkdir(parents=True, exist_ok=True)
    iv = pd.DataFrame(
        {
            "sample_id": cells,
            "intervention": labels,
            "targets": targets,
            "n_targets": [len(t) for t in targets],
            "is_control": [lab == "control" for lab in labels],
        }
    )
    write_table(
        iv, root / "interventions.parquet", "interventions", provenance("label", {}, {"perturbation_key": "guide"})
    )
    qc = pd.DataFrame(
        {
            "sample_id": cells,
            "total_counts": rng.lognormal(8, 0.3, len(cells)),
            "n_genes": rng.poisson(1500, len(cells)),
        }
    )
    write_table(
        qc,
        root / "qc.parquet",
        "qc",
        provenance("ingest", {"input": root / "interventions.parquet"}, {"format": "h5ad"}),
    )
    anchor_genes = {p: [f"{p}_g{k}" for k in range(3)] for p in programs}
    anchors = pd.DataFrame(
        [(p, g, 1.0 - 0.1 * k) for p, gs in anchor_genes.items() for k, g in enumerate(gs)],
        columns=["program", "feature", "weight"],
    )
    prov = provenance("anchors", {"preprocessed": root / "qc.parquet"}, {"min_anchors": 2})
    prov["dropped_programs"] = [
        {"program": "tiny_set", "n_in_set": 5, "n_in_data": 1, "reason": "fewer than 2 anchor genes in the data"}
    ]
    write_table(anchors, root / "anchors.parquet", "anchors", prov)
    interventions = sorted(set(labels) - {"control"})
    model_dirs = {}
    for m, (name, spec) in enumerate(models.items()):
        d = root / f"model{m}"
        latents = [f"z{j}" for j in range(len(programs))]
        train_prov = provenance("train", {"interventions": root / "interventions.parquet"}, {"model": name, "seed": 0})
        lat = pd.DataFrame(rng.normal(size=(len(cells), len(latents))), columns=latents).assign(sample_id=cells)
        write_table(lat[["sample_id", *latents]], d / "latents.parquet", "latents", train_prov)
        rows = [
            (iv_name, z, float(rng.normal(0, 0.2) + (2.0 if j == i % len(latents) else 0.0)), j == i % len(latents))
            for i, iv_name in enumerate(interventions)
            for j, z in enumerate(latents)
        ]
        write_table(
            pd.DataFrame(rows, columns=["intervention", "latent", "score", "is_target"]),
            d / "targets.parquet",
            "targets",
            train_prov,
        )
        n_edges = len(latents) - 1
        graph = pd.DataFrame(
            {
                "source": latents[:-1],
                "target": latents[1:],
                "weight": [0.8 if k % 2 == 0 else -0.6 for k in range(n_edges)],
                "stability": [0.95 if k % 2 == 0 else 0.3 for k in range(n_edges)],
                "false_edges_bound": [0.4 if k % 2 == 0 else np.nan for k in range(n_edges)],
                "confidence": ["confident" if k % 2 == 0 else "tentative" for k in range(n_edges)],
                "reason": ["" if k % 2 == 0 else "unstable: in 30% of refits" for k in range(n_edges)],
            }
        )
        write_table(
            graph, d / "graph.parquet", "graph", provenance("graph", {"model": d / "latents.parquet"}, {"n_refits": 20})
        )
        epochs = spec.get("epochs", 1)
        history = pd.DataFrame(
            {
                "epoch": list(range(epochs)) * 2,
                "split": ["train"] * epochs + ["validation"] * epochs,
                "loss": list(np.linspace(5, 1, epochs)) * 2,
            }
        )
        write_table(history, d / "training.parquet", "training", train_prov)
        if with_metrics:
            metrics = pd.DataFrame(
                {"metric": ["mcc", "shd", "target_accuracy"], "value": [0.912 - 0.1 * m, 1.0 + m, 0.875]}
            )
            write_table(
                metrics, d / "metrics.parquet", "metrics", provenance("evaluate", {"graph": d / "graph.parquet"})
            )
        if spec.get("loadings"):
            load = pd.DataFrame(
                [
                    (z, g, 1.0 if p == programs[j] else 0.1)
                    for j, z in enumerate(latents)
                    for p, gs in anchor_genes.items()
                    for g in gs
                ],
                columns=["latent", "feature", "loading"],
            )
            load.to_parquet(d / "loadings.parquet")
        meta = {
            "model": name,
            "params": {"n_latents": len(latents), "lr": 1e-3},
            "latent_names": latents,
            "intervention_names": interventions,
            "extra": {},
        }
        (d / "model.json").write_text(json.dumps(meta))
        model_dirs[name] = d
    paths = {
        "interventions": root / "interventions.parquet",
        "qc": root / "qc.parquet",
        "anchors": root / "anchors.parquet",
        "models": model_dirs,
    }
    if with_truth:
        truth = pd.DataFrame({"source": programs[:-1], "target": programs[1:], "weight": [1.0] * (len(programs) - 1)})
        truth.to_parquet(root / "truth_graph.parquet")
        paths["truth_graph"] = root / "truth_graph.parquet"
    return paths


#: The configuration the fake reports show under "How this was run".
CONFIG = {"dataset": {"name": "screen", "path": "data/screen.h5ad"}, "train": {"epochs": 15, "models": ["linear"]}}


def render(out: Path, dataset: str, paths: dict, config: dict | None = CONFIG, **more) -> Path:
    """``write_report`` of the artifacts ``paths`` (plus ``more`` of them)."""
    return write_report(out, ReportInputs.from_paths(dataset, {**paths, **more}, config=config))


def _html(path: Path) -> str:
    return path.read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def full_report(tmp_path_factory) -> tuple[str, dict]:
    root = tmp_path_factory.mktemp("full")
    paths = make_artifacts(root)
    out = render(root / "report.html", "K562 pilot screen", paths)
    return _html(out), paths


def test_report_is_complete(full_report):
    page, paths = full_report
    assert page.startswith("<!DOCTYPE html>") or page.lstrip().startswith("<!DOCTYPE html>")
    for number, (_, heading) in enumerate(SCREEN_SECTIONS, start=1):
        assert f">{number}. {html.escape(heading)}</h2>" in page
    assert "K562 pilot screen" in page
    for label in ["control", "GATA1", "TP53", "MYC", "SPI1", "GATA1+TP53"]:
        assert f">{label}<" in page
    for model in paths["models"]:
        assert f">{model}<" in page
    # metrics table: every model's values
    assert "0.912" in page and "0.812" in page and "0.875" in page
    assert ">1<" in page and ">2<" in page  # shd per model
    # programs, anchors, dropped programs and their reason
    assert "erythroid_g0" in page and "tiny_set" in page and "fewer than 2 anchor genes in the data" in page
    assert "<strong>erythroid_g0</strong>" in page  # anchor gene among a latent's top loadings
    # how this was run: config, versions, provenance hashes
    assert "data/screen.h5ad" in page
    for pkg in ["python", "crl-pipe", "torch", "scanpy", "anndata", "snakemake"]:
        assert f"<td>{pkg}</td>" in page
    assert re.search(r'title="[0-9a-f]{64}"', page)
    # identifiability, said plainly: latents z* carry no anchors of their own here, so no program is fully
    # identifiable, while each edge's cause has single-target perturbations
    assert "What these data can identify" in page
    assert "0 of 3 programs are fully identifiable; 0 of 2 edges rest on no intervention of their cause" in page
    assert "has a single-target intervention, but fewer than 2 anchors" in page
    assert "<td>GATA1, SPI1</td>" in page  # the perturbations backing z0 and its edge z0 -> z1
    # each edge's confidence call, and why a tentative one is (issue 16)
    assert "<strong>confident</strong>" in page and "tentative: unstable: in 30% of refits" in page
    assert "1 confident, 1 tentative; expected false edges among the confident ones at most 0.4" in page


def test_report_is_self_contained(full_report):
    page, _ = full_report
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", page, flags=re.I)
    assert "http://" not in page and "https://" not in page
    assert "<link" not in page and "<script" not in page and "@import" not in page and "url(" not in page
    images = re.findall(r'<img src="([^"]+)"', page)
    assert len(images) >= 6  # cells, QC, 2 heatmaps, 2 graphs (+ 1 training curve)
    assert all(src.startswith("data:image/png;base64,") for src in images)


def test_report_without_metrics_truth_or_config(tmp_path):
    paths = make_artifacts(tmp_path, models={"linear": {"epochs": 1}}, with_metrics=False, with_truth=False)
    out = render(tmp_path / "sub" / "report.html", "plain", paths, config=None)
    page = _html(out)
    for number, (_, heading) in enumerate(SCREEN_SECTIONS, start=1):
        assert f">{number}. {html.escape(heading)}</h2>" in page
    assert "has no ground truth" in page
    titles = dict(SECTIONS)
    assert "ground truth</" not in page.split(titles["graph"])[1].split(titles["metrics"])[0]
    assert "no curve to show: linear" in page
    assert "No configuration was recorded" in page


def test_report_escapes_user_strings(tmp_path):
    paths = make_artifacts(
        tmp_path,
        genes=[IMG, SCRIPT, "GENE&1"],
        programs=[IMG, SCRIPT, "prog\"'"],
        models={SCRIPT: {"epochs": 3, "loadings": True}, IMG: {"epochs": 1}},
    )
    out = render(tmp_path / "report.html", SCRIPT, paths, config={"dataset": {"name": SCRIPT, "note": IMG}})
    page = _html(out)
    assert IMG not in page and SCRIPT not in page
    assert "<img src=x" not in page and "<script" not in page
    assert html.escape(IMG, quote=False) in page
    assert html.escape(SCRIPT, quote=False) in page
    assert "GENE&amp;1" in page
    assert "onerror=alert(1)" in page  # present, but only as escaped text
    for match in re.finditer(r"onerror=alert\(1\)", page):
        assert page[: match.start()].rfind("&lt;") > page[: match.start()].rfind("<")


def test_report_errors_name_the_file(tmp_path):
    paths = make_artifacts(tmp_path, models={"linear": {"epochs": 1}}, with_truth=False)
    (tmp_path / "model0" / "graph.parquet").unlink()
    with pytest.raises(InputError, match=r"graph\.parquet"):
        render(tmp_path / "report.html", "x", paths)
    assert not (tmp_path / "report.html").exists()


def test_report_scales_to_many_interventions(tmp_path):
    genes = [f"GENE{i}" for i in range(120)]
    paths = make_artifacts(
        tmp_path, genes=genes, programs=[f"P{i}" for i in range(12)], models={"linear": {"epochs": 1}}
    )
    page = _html(render(tmp_path / "report.html", "big", paths))
    assert "Only the 60 of 121 perturbations" in page
    assert all(f">{g}<" in page for g in genes)


def test_report_reads_truth_graph_as_tsv(tmp_path):
    paths = make_artifacts(tmp_path, models={"linear": {"epochs": 1}}, with_truth=False)
    truth = tmp_path / "truth.tsv"
    truth.write_text("source\ttarget\tweight\nerythroid\tstress\t1.0\nstress\tgrowth\t-1.0\n")
    page = _html(render(tmp_path / "report.html", "x", paths, truth_graph=truth))
    assert "The true graph is on the right" in page
    assert "true graph<br>" in page  # listed among the artifacts (no provenance in a TSV)


def test_sections_speak_the_words_of_the_dataset_kind(tmp_path):
    """Nouns, titles, omitted sections and captions come from the kind's Vocabulary, not from branches."""
    paths = make_artifacts(tmp_path, models={"linear": {"epochs": 1, "loadings": True}}, with_truth=False)
    wells = Vocabulary(
        prose="plates",  # no paragraphs of its own: the screen's are used
        sample="well",
        samples="wells",
        label="compound",
        control="vehicle",
        controls="vehicle wells",
        perturbations_long="compounds (labels other than vehicle)",
        latents_long="pathways",
        features="readouts",
        title_words={"Programs": "Pathways"},
        omitted_sections=frozenset({"guides", "training"}),
        qc_figure=False,
        closest_program=False,
    )
    page = _html(write_report(tmp_path / "r.html", ReportInputs.from_paths("plate", paths, vocabulary=wells)))
    titles = re.findall(r"<h2>(.*?)</h2>", page)
    assert titles == [
        "1. What went in",
        "2. Which program each perturbation hits",
        "3. Pathways",
        "4. Causal graph among programs",
        "5. Metrics",
        "6. Where these data sit on the robustness atlas",
        "7. What if",
        "8. How this was run",
    ]
    assert "<td>wells</td>" in page and "<td>vehicle wells</td>" in page and "<td>pathways</td>" in page
    assert "Targets per well</h3>" in page and "</b>vehicle wells</li>" in page
    assert "Wells per compound, most first; vehicle in orange" in page  # the caption written from the nouns
    assert "<th>vehicle</th>" in page and "<td>vehicle (0 targets)</td>" in page
    assert "top 10 readouts by |loading|</th>" in page and "closest program" not in page
    assert "Quality control" not in page and 'id="guides"' not in page and 'id="training"' not in page
    assert "A <em>program</em> is a group of genes" in page  # the screen's paragraphs
    screen = _html(render(tmp_path / "s.html", "plate", paths, config={"dataset": {"kind": "screen"}}))
    robot = _html(render(tmp_path / "b.html", "plate", paths, config={"dataset": {"kind": "robot"}}))
    assert "Quality control" in screen and "Each row of the log is a <em>frame</em>" not in screen
    assert "Each row of the log is a <em>frame</em>" in robot and 'id="guides"' not in robot
    assert 'id="atlas"' in robot and "simulated robot logs that start clean" in robot  # placed on the robot rows
    assert ">2. Which variable each intervention hits</h2>" in robot and ">3. Causal variables</h2>" in robot


def test_report_lists_the_anchors_a_model_set_aside(tmp_path):
    """``linear`` checks its anchors against the perturbations; the report names the ones it set aside."""
    paths = make_artifacts(tmp_path, models={"linear": {"epochs": 1}})
    anchors = pd.read_parquet(paths["anchors"])
    sets = {str(p): list(g["feature"].astype(str)) for p, g in anchors.groupby("program", sort=False)}
    program = next(p for p, genes in sets.items() if len(genes) >= 3)
    aside = sets[program][-1]
    meta_path = paths["models"]["linear"] / "model.json"
    meta = json.loads(meta_path.read_text())
    meta["extra"]["anchor_sets"] = {**sets, program: sets[program][:-1]}
    meta_path.write_text(json.dumps(meta))
    page = _html(render(tmp_path / "report.html", "checked", paths))
    assert "<h3>Anchors set aside</h3>" in page and "so linear read the programs without them" in page
    block = page[page.index("<h3>Anchors set aside</h3>") :]
    block = block[: block.index("</table>")]
    assert f"<td>{program}</td>" in block and aside in block
    assert sum(g in block for genes in sets.values() for g in genes) == 1  # only the one set aside
    # all kept: a one-line note instead of the table
    meta["extra"]["anchor_sets"] = sets
    meta_path.write_text(json.dumps(meta))
    page = _html(render(tmp_path / "report2.html", "checked", paths))
    assert "Anchors set aside" not in page and "(linear checked; none set aside)" in page


def _with_linear_extra(tmp_path, paths, name: str, **extra) -> str:
    """The report (unescaped) after setting ``extra`` entries of ``linear``'s ``model.json``."""
    meta_path = paths["models"]["linear"] / "model.json"
    meta = json.loads(meta_path.read_text())
    meta["extra"].update(extra)
    meta_path.write_text(json.dumps(meta))
    return html.unescape(_html(render(tmp_path / f"{name}.html", name, paths)))


def test_report_warns_when_programs_took_over_the_library_of_many_cells(tmp_path):
    """A ``linear`` fit whose cells have lost their stable genes' counts (``starved_cells``) gets a warning."""
    paths = make_artifacts(tmp_path, models={"linear": {"epochs": 1}})
    meta = json.loads((paths["models"]["linear"] / "model.json").read_text())
    assert (meta["extra"].get("starved_cells") or 0.0) < STARVED_WARNING
    for share in (None, STARVED_WARNING / 2):  # not measured (no counts, an older fit), or few: no warning
        page = _with_linear_extra(tmp_path, paths, "few", starved_cells=share)
        assert "took over nearly the whole library" not in page
    page = _with_linear_extra(tmp_path, paths, "starved", starved_cells=0.55)
    warning = page[page.index('<p class="warning">Programs took over') :]
    assert warning.index("nearly the whole library in 55% of the cells") < warning.index("</p>")
    assert page.index('<p class="warning">Programs took over') > page.index('<section id="graph">')


def test_report_warns_when_a_models_graph_equations_do_not_fit(tmp_path):
    """A model whose mean-shift equations leave much unexplained gets a warning above its graph."""
    paths = make_artifacts(tmp_path, models={"linear": {"epochs": 1}})
    for misfit in (None, MISFIT_WARNING / 2):  # not measured (an older model), or a good fit: no warning
        assert "Do not trust this graph yet" not in _with_linear_extra(tmp_path, paths, "fits", equation_misfit=misfit)
    page = _with_linear_extra(tmp_path, paths, "misfit", equation_misfit=0.13)
    warning = page[page.index('<p class="warning">') :]
    assert warning.index("Do not trust this graph yet: its equations leave 13% of") < warning.index("</p>")
    assert page.index('<p class="warning">') > page.index('<section id="graph">')
    # where the hierarchy explains edges by a module, the warning points there instead
    given = pd.DataFrame(
        {"source": ["z0", "z1"], "target": ["z1", "z2"], "weight": [0.0, 0.5], "stability": [1.0, 1.0],
         "status": ["explained", "kept"], "explained_by": ["M1", None]}
    )  # fmt: skip
    write_table(given, paths["models"]["linear"] / "graph_given_modules.parquet", "graph")
    page = html.unescape(_html(render(tmp_path / "report3.html", "modules", paths)))
    assert "Do not trust this graph yet" not in page
    assert "Read this graph with the concept levels: its equations leave 13% of" in page
    assert "modules explain 1 edge here." in page
    # a pair the hierarchy explains that this graph does not draw is no edge of it (the demo since edge_z)
    write_table(
        given.assign(source=["z2", "z1"], target=["z0", "z2"]),
        paths["models"]["linear"] / "graph_given_modules.parquet",
        "graph",
    )
    page = html.unescape(_html(render(tmp_path / "report4.html", "undrawn", paths)))
    assert "modules explain the shifts of 1 program pair, none drawn as an edge here." in page
    assert "explained by a module (Concept levels, below)" not in page
