"""Where camera frames live: ``obsm["frames.<camera>"]`` of the robot AnnData, decoded once at ingest.

Each camera is one ``frames x size x size x 3`` uint8 RGB array in ``obsm`` (row i = the camera's
view at frame i), and ``uns["crl_pipe_cameras"]`` records, per camera, where it came from (the
LeRobot feature or ROS topic) and the size it was downscaled to.

Why ``obsm`` of the ingested AnnData and not an array store beside it: the frames then follow their
rows through every stage for free (preprocess keeps the labelled frames, held-out labels and
bootstrap refits subset rows), the ``ingested.h5ad`` / ``preprocessed.h5ad`` artifacts and their
provenance stay the whole contract (no extra rule outputs), and at the small sizes a model learns
from (64 x 64 RGB: 12 kB a frame, gzip-compressed in the h5ad) a 10,000-frame log takes ~120 MB
raw. Training reads these arrays and never decodes a video. The cost: both h5ad files hold a copy,
and a file is read whole; for logs of millions of frames a chunked store (zarr) would be better.
"""

from __future__ import annotations

from collections.abc import Mapping

import anndata as ad
import numpy as np

from .._errors import InputError

#: Prefix of the ``obsm`` keys that hold camera frames.
FRAMES_PREFIX = "frames."
#: ``uns`` key of the per-camera record (source, size).
CAMERAS_KEY = "crl_pipe_cameras"


def add_frames(adata: ad.AnnData, camera: str, frames: np.ndarray, *, source: str) -> None:
    """Store ``frames`` (n_obs x size x size x 3 uint8) of ``camera`` in ``adata`` (in place)."""
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[0] != adata.n_obs or frames.shape[3] != 3:
        raise InputError(
            f"camera {camera!r}: frames of shape {frames.shape} ({frames.dtype}); "
            f"expected {adata.n_obs} x height x width x 3 uint8"
        )
    adata.obsm[FRAMES_PREFIX + camera] = frames
    record = dict(adata.uns.get(CAMERAS_KEY, {}))
    record[camera] = {"source": source, "height": int(frames.shape[1]), "width": int(frames.shape[2])}
    adata.uns[CAMERAS_KEY] = record


def camera_names(adata: ad.AnnData) -> list[str]:
    """Cameras stored in ``adata`` (sorted)."""
    return sorted(k.removeprefix(FRAMES_PREFIX) for k in adata.obsm if k.startswith(FRAMES_PREFIX))


def get_frames(adata: ad.AnnData) -> dict[str, np.ndarray]:
    """Camera -> frames (n_obs x size x size x 3 uint8) of every camera stored in ``adata``."""
    return {c: np.asarray(adata.obsm[FRAMES_PREFIX + c], dtype=np.uint8) for c in camera_names(adata)}


def camera_name(key: str) -> str:
    """The short name of a LeRobot video feature (``observation.images.front`` -> ``front``) or a ROS
    image topic (``/camera/color/image_raw`` -> ``camera.color.image_raw``): an ``obsm`` key part."""
    name = key.removeprefix("observation.images.").strip("/").replace("/", ".")
    return name or key


def stacked(frames: Mapping[str, np.ndarray]) -> np.ndarray:
    """Several cameras of one size as one n x size x size x 3k array (cameras side by side as channels)."""
    names = sorted(frames)
    shapes = {frames[c].shape[1:3] for c in names}
    if len(shapes) != 1:
        raise InputError(f"cameras {names} have frames of different sizes {sorted(shapes)}; expected one frame_size")
    return np.concatenate([frames[c] for c in names], axis=3)
