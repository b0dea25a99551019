"""A robot log: frames x channels (states, commanded actions, events) of one or more episodes.

Formats: ``lerobot``, ``rosbag`` and ``table`` (``kind: robot``). The interventions are the
command changes and events of the log; preprocessing keeps the channels of the chosen kinds; each
state channel is a causal variable that anchors itself.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from .._constants import FRAME_SIZE
from .._errors import InputError
from ._base import DatasetKind, GeneSets, PathLike
from ._vocabulary import ROBOT

if TYPE_CHECKING:
    import anndata as ad
    import pandas as pd


class RobotKind(DatasetKind):
    """Robot logs (``kind: robot``, format ``lerobot``, ``rosbag`` or ``table``)."""

    name = "robot"
    config_kind = "robot"
    formats = ("lerobot", "rosbag", "table")
    vocabulary = ROBOT
    truth = {
        "graph": "edges among the causal variables (joints, objects), with their lag in frames",
        "targets": "each intervention (command, event) and the variable(s) it acts on",
        "latents": "each frame's true variable values",
    }

    # ---- config side
    def ingest_options(self, dataset: Mapping[str, Any]) -> dict[str, Any]:
        # cameras and their frame size only where the dataset names cameras: a log without cameras
        # is read (and cached) exactly as before
        cameras = {}
        if dataset.get("cameras"):
            cameras = {"cameras": list(dataset["cameras"]), "frame_size": int(dataset.get("frame_size", FRAME_SIZE))}
        return dict(dataset.get("reader", {})) | cameras

    def label_options(self, dataset: Mapping[str, Any], config: Mapping[str, Any]) -> dict[str, Any]:
        return dict(dataset.get("robot_labels", {}))

    def preprocess_options(self, dataset: Mapping[str, Any], config: Mapping[str, Any]) -> dict[str, Any]:
        return {"channel_kinds": list(dataset.get("channel_kinds", ["state", "action"]))}

    def report_files(self, folder: str) -> dict[str, str]:
        # the report's place on the robustness atlas reads the log (sensor noise, episodes, commands)
        return {"expression": f"{folder}/preprocessed.h5ad"}

    def hierarchy_samples(
        self, latents: pd.DataFrame, interventions: pd.DataFrame
    ) -> tuple[pd.DataFrame, pd.DataFrame]:
        """The innovations of the variables' frame-to-frame changes, every frame one observational group.

        A joint's position integrates every command it was ever given, and its change carries the
        last frame's changes of itself and of the joints it is coupled to. What is left of a change
        after a first-order vector autoregression on the previous frame's changes (least squares,
        pooled over episodes) is what arrived in this frame: a joint's own command, or a drive that
        a limb or tool shares (a common command), which moves all its joints at once. A command change
        acts over the frames after it, not within its own frame: there is no shift of a frame's
        distribution to read, so the modules come from the co-variation alone (no program graph is
        re-read, no module graph identified from interventions). The first two frames of each episode
        have no innovation and are left out.
        """
        import numpy as np  # data side, as above
        import pandas as pd  # data side, as above

        frames = interventions.set_index("sample_id").reindex(latents["sample_id"])
        episode = frames["episode"].to_numpy() if "episode" in frames else np.zeros(len(latents))
        values = latents.drop(columns="sample_id").astype(float)
        change = values.groupby(episode).diff()
        previous = change.groupby(episode).shift(1)
        keep = (change.notna().all(axis=1) & previous.notna().all(axis=1)).to_numpy()
        D, P = change.to_numpy()[keep], previous.to_numpy()[keep]
        design = np.column_stack([np.ones(len(P)), P])
        coef, *_ = np.linalg.lstsq(design, D, rcond=None)
        innovations = pd.DataFrame(D - design @ coef, columns=values.columns)
        out = pd.concat([latents.loc[keep, ["sample_id"]].reset_index(drop=True), innovations], axis=1)
        labels = pd.DataFrame(
            {"sample_id": out["sample_id"], "intervention": self.vocabulary.control, "n_targets": 0, "is_control": True}
        )
        labels["targets"] = [[] for _ in range(len(labels))]
        return out, labels

    # ---- data side
    def read(self, path: PathLike, *, format: str, **options: Any) -> ad.AnnData:
        from .. import io  # data side: loads anndata, kept out of the Snakemake process

        return io.read_screen(path, format=format, **options)  # the reader registry of every layout

    def label(self, ingested: PathLike, **options: Any) -> tuple[pd.DataFrame, dict[str, Any]]:
        """Interventions from the events and commanded actions (:func:`crl_pipe.pp.robot_interventions`;
        ``options``: its settings, config ``robot_labels``)."""
        from .. import pp  # data side, as above
        from ..io import read_h5ad  # data side, as above

        try:
            table = pp.robot_interventions(read_h5ad(ingested), **options)
        except InputError as err:  # name the file, as the screen labels do
            raise InputError(f"{ingested}: {err}") from None
        return table, dict(options)

    def preprocess(
        self,
        adata: ad.AnnData,
        labels: pd.DataFrame,
        *,
        gene_sets: GeneSets | None = None,
        channel_kinds: Sequence[str] = ("state", "action"),
    ) -> ad.AnnData:
        from .. import pp  # data side, as above

        return pp.preprocess_robot(adata, labels, kinds=channel_kinds)

    def anchors(
        self,
        adata: ad.AnnData,
        gene_sets: GeneSets | None,
        *,
        min_anchors: int = 2,
        exclusive: bool = True,
        n_programs: int | None = None,
    ) -> tuple[pd.DataFrame, pd.DataFrame | None]:
        from .. import pp  # data side, as above

        return pp.robot_anchors(adata), None
