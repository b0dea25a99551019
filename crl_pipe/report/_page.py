"""The page: which sections it shows in which order, and the one template that lays them out.

Every figure is embedded as a base64 PNG data URI (:func:`crl_pipe.report._blocks.figure`); every
string from the data (gene, guide, program, model, dataset names, config values) reaches the page
only through Jinja2 with autoescaping on, never marked safe. The page loads nothing: no external
CSS, JavaScript, fonts or images.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jinja2

from .. import __version__
from .._provenance import atomic_path
from ._inputs import ReportInputs
from .sections.atlas import atlas_section
from .sections.frames import any_sees_frames, frames_section
from .sections.glance import glance_table
from .sections.graph import graph_section
from .sections.guides import guides_section
from .sections.heldout import held_out_table
from .sections.hierarchy import has_hierarchy, hierarchy_section
from .sections.inputs import inputs_section
from .sections.metrics import metrics_table
from .sections.programs import programs_section
from .sections.run import run_section
from .sections.targets import targets_section
from .sections.training import training_section
from .sections.whatif import rollouts_table, singles_table, whatif_section

PathLike = str | os.PathLike

_TEMPLATES = Path(__file__).parent / "templates"


@dataclass(frozen=True)
class Section:
    """A numbered section of the page: its anchor (also its template, ``sections/<anchor>.html.j2``),
    its title in a screen's words, the parts it renders (template variable -> builder), and when it is
    shown (default: always, unless the kind's vocabulary omits it)."""

    anchor: str
    title: str
    parts: dict[str, Callable[[ReportInputs], Any]]
    #: shown only when this says so (None: always, unless the kind omits it)
    shown_if: Callable[[ReportInputs], bool] | None = None

    def shown(self, inputs: ReportInputs) -> bool:
        """Whether the page of ``inputs`` shows this section."""
        if self.anchor in inputs.vocabulary.omitted_sections:
            return False
        return self.shown_if is None or self.shown_if(inputs)


#: The numbered sections, in page order.
PAGE: tuple[Section, ...] = (
    Section("inputs", "What went in", {"inputs": inputs_section}),
    Section("guides", "Guides and knockdown", {"guides": guides_section}),
    Section("targets", "Which program each perturbation hits", {"targets": targets_section}),
    Section("programs", "Programs", {"programs": programs_section}),
    Section("frames", "What the latents see", {"frames": frames_section}, shown_if=any_sees_frames),
    Section("graph", "Causal graph among programs", {"graphs": graph_section}),
    Section(
        "hierarchy", "Concept levels: programs and modules", {"hierarchy": hierarchy_section}, shown_if=has_hierarchy
    ),
    Section("metrics", "Metrics", {"metrics": metrics_table, "heldout": held_out_table}),
    Section("atlas", "Where these data sit on the robustness atlas", {"atlas": atlas_section}),
    Section("whatif", "What if", {"whatif": whatif_section, "singles": singles_table, "rollouts": rollouts_table}),
    Section("training", "Training curves", {"training": training_section}),
    Section("run", "How this was run", {"run": run_section}),
)

#: Section anchors and headings, in page order (the table of contents); numbered when rendered. Sections
#: with a ``shown_if`` (shown only for some results: camera frames, concept levels) are not listed.
SECTIONS: list[tuple[str, str]] = [(s.anchor, s.title) for s in PAGE if s.shown_if is None]


def write_report(out_html: PathLike, inputs: ReportInputs) -> Path:
    """Write the report of ``inputs`` to ``out_html`` (one file; figures embedded; no network needed).

    Parameters
    ----------
    out_html
        Where to write the HTML file (atomically: no partial file is left on error).
    inputs
        What the report shows (:meth:`ReportInputs.from_paths` reads it from the stage artifacts).
    """
    html = render_report(inputs)
    with atomic_path(out_html) as tmp:
        tmp.write_text(html, encoding="utf-8")
    return Path(out_html)


def render_report(inputs: ReportInputs) -> str:
    """The report as an HTML string (see :func:`write_report`)."""
    shown = [s for s in PAGE if s.shown(inputs)]
    numbered = [(s.anchor, f"{i}. {inputs.vocabulary.title(s.title)}") for i, s in enumerate(shown, start=1)]
    context: dict[str, Any] = {
        "dataset": inputs.dataset,
        "version": __version__,
        "vocabulary": inputs.vocabulary,
        "prose_template": prose_template(inputs.vocabulary.prose),
        "page": [s.anchor for s in PAGE],
        "sections": numbered,
        "titles": dict(numbered),
        "glance": glance_table(inputs),
    }
    for section in shown:
        context.update({name: build(inputs) for name, build in section.parts.items()})
    return _environment().get_template("report.html.j2").render(**context)


def prose_template(prose: str) -> str:
    """The template of a kind's explanatory paragraphs, ``prose/<prose>.html.j2``; a kind without its own
    (a new one, a test's) reads the screen's."""
    name = f"prose/{prose}.html.j2"
    return name if (_TEMPLATES / name).is_file() else "prose/screen.html.j2"


def _environment() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(_TEMPLATES),
        autoescape=jinja2.select_autoescape(enabled_extensions=("html", "j2"), default_for_string=True, default=True),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
