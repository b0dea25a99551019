"""Hostile strings in a screen cannot script its report, checked in a real browser.

A tiny screen whose gene names, guide (perturbation) labels, control label, perturbation column,
program names, true-graph nodes and config values carry HTML/JS payloads goes through every stage
up to the report (dataset names must be safe path components, so the payloads live in the other
strings). Headless Chromium opens the report and dumps its DOM after scripts had time to run:

- the ``<title>`` is unchanged (payloads set ``document.title = 'PWNED'`` if they ever run);
- the DOM holds no ``<script>`` element, no ``on*`` attribute, and only embedded-PNG images;
- every payload is on the page as visible text, exactly as written.

A control page with one raw payload shows that the harness does see script execution.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pandas as pd
import pytest

from crl_pipe import pipeline
from crl_pipe.io import write_gmt, write_table
from crl_pipe.simulate import simulate_screen

IMG = "<img src=x onerror=alert(1)>"
SCRIPT = "<script>alert(1)</script>"
TITLE_IMG = "<img src=x onerror=\"document.title='PWNED'\">"
TITLE_SCRIPT = "<script>document.title='PWNED'</script>"
TITLE_ATTR = '"><svg onload="document.title=\'PWNED\'">'  # breaks out of an attribute if unescaped
PAYLOADS = [IMG, SCRIPT, TITLE_IMG, TITLE_SCRIPT, TITLE_ATTR]

DATASET = "xss"
TITLE = f"crl-pipe report: {DATASET}"
CONTROL = f"NT{IMG}"
KEY = f"guide {TITLE_IMG}"  # the perturbation column (no '/', which HDF5 keys cannot hold)
LABELS = {"REG1": f"REG1{TITLE_IMG}", "REG2": f"REG2{SCRIPT}", "REG3": f"REG3{TITLE_ATTR}"}
PROGRAMS = {"P1": f"P1{TITLE_SCRIPT}", "P2": f"P2{IMG}", "P3": f"P3{TITLE_ATTR}"}


def chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        found = shutil.which(name)
        if found:
            return found
    pytest.skip(
        "headless Chromium is not installed (apt-get install chromium); the report's escaping "
        "is still checked without a browser in tests/test_report.py"
    )


def dump_dom(browser: str, page: Path, profile: Path) -> str:
    cmd = [
        browser,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--disable-dev-shm-usage",
        f"--user-data-dir={profile}",
        "--virtual-time-budget=3000",
        "--dump-dom",
        page.as_uri(),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and "<html" in proc.stdout, proc.stderr[-2000:]
    return proc.stdout


class DomScan(HTMLParser):
    """Elements, attributes, the title and the visible text of a dumped DOM."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []
        self.title = ""
        self._in: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))
        if tag not in ("img", "meta", "br", "hr", "link", "input"):
            self._in.append(tag)

    def handle_endtag(self, tag):
        if tag in self._in:
            while self._in and self._in.pop() != tag:
                pass

    def handle_data(self, data):
        if self._in and self._in[-1] == "title":
            self.title += data
        elif not (self._in and self._in[-1] in ("style", "script")):
            self.text.append(data)


def scan(dom: str) -> DomScan:
    parser = DomScan()
    parser.feed(dom)
    parser.close()
    return parser


def _hostile_screen(folder: Path) -> dict[str, Path]:
    sim = simulate_screen(
        n_programs=3, n_genes=60, anchors_per_program=5, n_control=150, cells_per_perturbation=40, n_doubles=1, seed=2
    )
    adata = sim.adata.copy()
    genes = {g: f"{g}{SCRIPT if i % 2 else TITLE_IMG}" for i, g in enumerate(adata.var_names)}
    adata.var_names = [genes[g] for g in adata.var_names]

    def relabel(label: str) -> str:
        if label == "non-targeting":
            return CONTROL
        return "+".join(LABELS[part] for part in label.split("+"))

    adata.obs = pd.DataFrame({KEY: [relabel(x) for x in adata.obs["perturbation"].astype(str)]}, index=adata.obs_names)
    paths = {"screen": folder / "screen.h5ad", "gmt": folder / "programs.gmt", "truth": folder / "truth_graph.parquet"}
    adata.write_h5ad(paths["screen"])
    write_gmt({PROGRAMS[p]: [genes[g] for g in members] for p, members in sim.gene_sets.items()}, paths["gmt"])
    truth = sim.graph.assign(
        source=sim.graph["source"].map(PROGRAMS), target=sim.graph["target"].map(PROGRAMS), stability=1.0
    )
    write_table(truth, paths["truth"], "graph")
    return paths


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("xss")
    inputs = _hostile_screen(folder)
    res, model = folder / "results", folder / "results" / "linear"
    pipeline.ingest(path=inputs["screen"], out_h5ad=res / "ingested.h5ad", out_qc=res / "qc.parquet")
    pipeline.label(
        ingested=res / "ingested.h5ad",
        out=res / "interventions.parquet",
        options={"perturbation_key": KEY, "control_values": [CONTROL], "min_cells": 5},
    )
    pipeline.preprocess(
        ingested=res / "ingested.h5ad",
        interventions=res / "interventions.parquet",
        out=res / "preprocessed.h5ad",
        gene_sets=inputs["gmt"],
        options={"n_top_genes": 30},
    )
    pipeline.anchors(preprocessed=res / "preprocessed.h5ad", out=res / "anchors.parquet", gene_sets=inputs["gmt"])
    data = {
        "preprocessed": res / "preprocessed.h5ad",
        "interventions": res / "interventions.parquet",
        "anchors": res / "anchors.parquet",
    }
    pipeline.train(**data, out_dir=model, model="linear")
    pipeline.graph(
        **data, model_dir=model, out_parquet=model / "graph.parquet", out_graphml=model / "graph.graphml", n_refits=2
    )
    config = {
        "dataset": {
            "name": DATASET,
            "format": "h5ad",
            "path": f"data/{SCRIPT}.h5ad",
            "perturbation_key": KEY,
            "control_values": [CONTROL],
            "gene_sets": f"{TITLE_SCRIPT}.gmt",
        },
        "labels": {"min_cells": 5},
        "note": TITLE_ATTR,
    }
    pipeline.report(
        dataset=DATASET,
        out_html=res / "report.html",
        artifacts={
            "interventions": res / "interventions.parquet",
            "qc": res / "qc.parquet",
            "anchors": res / "anchors.parquet",
            "models": {"linear": model},
            "truth_graph": inputs["truth"],
        },
        config=config,
    )
    return res / "report.html"


def test_the_harness_sees_script_execution(tmp_path):
    """Control: the same browser run on a page with one raw payload reports the changed title."""
    browser = chromium()
    page = tmp_path / "raw.html"
    page.write_text(f"<!DOCTYPE html><html><head><title>{TITLE}</title></head><body>{TITLE_IMG}</body></html>")
    assert scan(dump_dom(browser, page, tmp_path / "profile")).title == "PWNED"


def test_payloads_reach_the_report(report):
    html = report.read_text(encoding="utf-8")
    anchors = pd.read_parquet(report.parent / "anchors.parquet")
    assert set(anchors["program"]) == set(PROGRAMS.values())  # hostile program names made it through
    for payload in PAYLOADS:
        assert payload not in html, f"raw payload in the HTML: {payload}"


def test_report_in_a_browser_runs_no_payload(report, tmp_path):
    dom = scan(dump_dom(chromium(), report, tmp_path / "profile"))
    assert dom.title == TITLE, f"title changed to {dom.title!r}: a payload ran"
    tags = [tag for tag, _ in dom.tags]
    assert "script" not in tags and "svg" not in tags and "iframe" not in tags
    handlers = [(tag, name) for tag, attrs in dom.tags for name in attrs if name.lower().startswith("on")]
    assert not handlers, f"event-handler attributes in the DOM: {handlers[:5]}"
    images = [attrs.get("src") or "" for tag, attrs in dom.tags if tag == "img"]
    assert images and all(src.startswith("data:image/png;base64,") for src in images), [s[:40] for s in images]
    text = "".join(dom.text)
    for payload in PAYLOADS:
        assert payload in text, f"payload not shown as text: {payload}"
    for value in [*LABELS.values(), *PROGRAMS.values(), CONTROL, KEY]:
        assert value in text, f"{value!r} not visible in the report"
    assert json.dumps(TITLE_ATTR)[1:-1] not in dom.title
