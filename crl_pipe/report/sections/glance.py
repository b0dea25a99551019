"""At a glance: the page's opening table (samples, perturbations, programs, models, truth)."""

from __future__ import annotations

from .._blocks import Table
from .._format import count
from .._inputs import ReportInputs


def glance_table(inputs: ReportInputs) -> Table:
    """The dataset's size and what was run on it, in the words of its kind."""
    words, labels = inputs.vocabulary, inputs.labels
    perturbed = labels.loc[~labels["is_control"], "intervention"]
    rows = [
        ["dataset", inputs.dataset],
        [words.samples, count(len(labels))],
        [words.perturbations_long, count(perturbed.nunique())],
        [words.controls, count(int(labels["is_control"].sum()))],
        [words.latents_long, count(inputs.anchors["program"].nunique())],
        ["models", ", ".join(m.name for m in inputs.fitted) or "none"],
        ["ground-truth graph", "yes" if inputs.truth is not None else "no"],
    ]
    return Table(["", ""], rows)
