"""The words a report uses for one kind of data: cells and genes, or frames and channels."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Vocabulary:
    """Nouns (and the prose variant) with which the report speaks of a dataset kind.

    ``prose`` names the template of the report's longer explanatory paragraphs
    (``crl_pipe/report/templates/prose/<prose>.html.j2``; ``"screen"`` or ``"robot"``);
    ``title_words`` rewrite the screen section titles (``{"Programs": "Causal variables"}``);
    ``omitted_sections`` are report sections that mean nothing for this kind; ``qc_figure``: whether
    counts and detected genes per sample mean something (not for robot channels); ``counts_caption``:
    the caption of the samples-per-label figure (empty: one written from the nouns);
    ``closest_program``: whether a latent's top features are matched to the anchored program they
    overlap most (not where each variable is its own anchor channel); ``atlas``: the rows of the
    robustness atlas (its ``kind`` column, a key of :data:`crl_pipe.tl.ATLAS_KINDS`) that the report
    places these data on, with that kind's estimates (``"screen"``: knockdown, cells, anchors;
    ``"robot"``: episodes, sensor noise, channels without a command).
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
    counts_caption: str = ""
    closest_program: bool = True
    atlas: str = "screen"

    def samples_per_label_caption(self) -> str:
        """The caption of the figure of samples per label: ``counts_caption``, or one in this kind's nouns."""
        return self.counts_caption or (
            f"{self.samples.capitalize()} per {self.label}, most first; {self.control} in orange, dashed line = "
            f"median. Look for {self.label}s with far fewer {self.samples} than the rest: their estimates are the "
            "least reliable."
        )

    def title(self, title: str) -> str:
        """A section title in this kind's words (``title_words`` applied in order)."""
        for screen, own in self.title_words.items():
            title = title.replace(screen, own)
        return title


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
    counts_caption=(
        "Frames per intervention label (the variables whose command changed on that frame, or an event's "
        "targets), most first; observational frames in orange, dashed line = median. A label seen on few "
        "frames says little on its own; the temporal model pools them by target."
    ),
    closest_program=False,
    atlas="robot",
)
