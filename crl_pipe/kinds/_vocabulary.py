"""The words a report uses for one kind of data: cells and genes, or frames and channels."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Vocabulary:
    """Nouns (and the prose variant) with which the report speaks of a dataset kind.

    ``prose`` picks the report's longer explanatory paragraphs (``"screen"`` or ``"robot"``);
    ``title_words`` rewrite the screen section titles (``{"Programs": "Causal variables"}``);
    ``omitted_sections`` are report sections that mean nothing for this kind.
    """

    prose: str
    sample: str
    samples: str
    label: str
    control: str
    controls: str
    perturbations_long: str
    latents_long: str
    features: str
    title_words: dict[str, str] = field(default_factory=dict)
    omitted_sections: frozenset[str] = frozenset()
    qc_figure: bool = True


#: Perturbation screens (counts or tables of measured variables): cells, genes, programs.
SCREEN = Vocabulary(
    prose="screen",
    sample="cell",
    samples="cells",
    label="perturbation",
    control="control",
    controls="control cells",
    perturbations_long="perturbations (labels other than control)",
    latents_long="programs with anchor genes",
    features="genes",
)

#: Robot logs: frames, channels, commands and events, causal variables.
ROBOT = Vocabulary(
    prose="robot",
    sample="frame",
    samples="frames",
    label="intervention",
    control="observational",
    controls="observational frames",
    perturbations_long="interventions (command changes, events)",
    latents_long="causal variables",
    features="channels",
    title_words={
        "perturbation": "intervention",
        "Programs": "Causal variables",
        "programs": "variables",
        "program": "variable",
    },
    omitted_sections=frozenset({"guides"}),
    qc_figure=False,
)
