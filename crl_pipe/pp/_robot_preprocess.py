"""Robot logs -> what the models see: labelled frames, chosen channel kinds, and identity anchors."""

from __future__ import annotations

from collections.abc import Sequence

import anndata as ad
import numpy as np
import pandas as pd

from .._errors import InputError
from ..io._frames import camera_names


def preprocess_robot(
    adata: ad.AnnData, interventions: pd.DataFrame, *, kinds: Sequence[str] = ("state", "action")
) -> ad.AnnData:
    """Keep the labelled frames and the channels of the given kinds; no normalisation.

    Robot channels are already in physical units, and the ``temporal`` model standardises what it
    fits, so nothing is rescaled here (unlike :func:`crl_pipe.pp.preprocess` for count data).

    Parameters
    ----------
    adata
        Robot logs in the canonical layout (:func:`crl_pipe.io.read_robot`). Not modified.
    interventions
        The ``interventions`` table (:func:`crl_pipe.pp.robot_interventions`).
    kinds
        Channel kinds kept (``var["kind"]``).

    Returns
    -------
    New AnnData in the frame order of ``adata`` (time order per episode): dense float32 ``X``;
    ``obs`` keeps ``episode``, ``frame``, ``timestamp`` and gains ``intervention``, ``is_control``;
    the parameters land in ``uns["crl_pipe_preprocess"]``.
    """
    if "kind" not in adata.var:
        raise InputError("var column 'kind' not found; expected robot channels of kind state/action/event/other")
    channels = adata.var_names[adata.var["kind"].isin(list(kinds))]
    if channels.empty:
        raise InputError(
            f"no channel of kind {list(kinds)}; expected some (kinds present: {sorted(set(adata.var['kind']))})"
        )
    labels = interventions.set_index("sample_id")
    keep = adata.obs_names.isin(labels.index)
    if not keep.any():
        raise InputError("interventions table: no sample_id matches a frame of the robot logs")
    out = adata[keep, channels].to_memory() if adata.isbacked else adata[keep, channels].copy()
    out.X = np.asarray(out.X, dtype=np.float32)
    labels = labels.loc[out.obs_names]
    out.obs["intervention"] = pd.Categorical(labels["intervention"].astype(str).to_numpy())
    out.obs["is_control"] = labels["is_control"].astype(bool).to_numpy()
    out.uns["crl_pipe_preprocess"] = {"kinds": list(kinds), "n_frames": int(out.n_obs), "n_channels": int(out.n_vars)}
    return out


def robot_anchors(adata: ad.AnnData) -> pd.DataFrame:
    """Anchors table in which each state channel is its own program (weight 1).

    Robot latents are the measured state variables themselves, so each program is anchored by the
    one channel it is (the ``temporal`` model reads the latents straight from those channels). A log
    seen only through cameras (no state channel, frames in ``obsm``) gets an empty table: the
    ``camera`` model learns its latents from the frames.
    """
    if "kind" not in adata.var:
        raise InputError("var column 'kind' not found; expected robot channels of kind state/action/event/other")
    states = [str(c) for c in adata.var_names[adata.var["kind"] == "state"]]
    if not states and camera_names(adata):  # seen only through cameras: the latents anchor on no channel
        return pd.DataFrame({"program": pd.Series([], dtype=str), "feature": pd.Series([], dtype=str), "weight": []})
    if not states:
        raise InputError("no channel of kind 'state'; expected the robot's state variables (or camera frames)")
    return pd.DataFrame({"program": states, "feature": states, "weight": 1.0})
