"""Camera frames in and out: video files and image messages, decoded with PyAV, on the table's clock.

Every camera ends as ``frames x size x size x 3`` uint8 RGB (:mod:`crl_pipe.io._camera` stores them
in the ingested AnnData). Frames are downscaled as they are decoded (swscale's area filter), so a
long full-resolution recording is never held in memory whole.

Alignment of a video to its table (LeRobot): the table's timestamp of each frame (plus the
episode's ``from_timestamp`` in a v3.0 file of several episodes) must match the time of a decoded
video frame within ``tolerance_s`` (LeRobot's own check uses 1e-4 s); a table that runs past the end
of its video, or a timestamp with no video frame near it, is an error that names the file and camera.

PyAV (``pip install av``, in the extras ``robot`` and ``test``) is imported only when a camera is read
or written.
"""

from __future__ import annotations

import io
import os
from collections.abc import Sequence
from fractions import Fraction
from pathlib import Path

import numpy as np

from .._errors import InputError

#: LeRobot's tolerance between a table timestamp and its video frame (s).
TOLERANCE_S = 1e-4
#: Encoders tried in order when a video is written (libx264 where FFmpeg has it; mpeg4 is always built in).
_ENCODERS = ("libx264", "h264", "mpeg4")


def import_av():
    """The ``av`` module (PyAV), or an ImportError that says how to install it."""
    try:
        import av  # deferred: PyAV only for logs read or written with cameras
    except ImportError:
        raise ImportError(
            "reading or writing camera videos needs PyAV: pip install av (or 'crl-pipe[robot]')"
        ) from None
    return av


def check_frame_size(size: int, where: str) -> int:
    """``size`` as an int in 8..512, else an InputError naming ``where``."""
    if isinstance(size, bool) or not isinstance(size, int | np.integer) or not 8 <= size <= 512:
        raise InputError(f"{where}: frame_size={size!r}; expected an integer from 8 to 512 (pixels)")
    return int(size)


def resize(frame, size: int) -> np.ndarray:
    """An ``av.VideoFrame`` as a ``size x size x 3`` uint8 RGB array (area-averaged, aspect not kept)."""
    return frame.to_ndarray(width=size, height=size, format="rgb24", interpolation="AREA")


def decode_video(path: Path, camera: str, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Every frame of the first video stream of ``path``: (times in s, frames x size x size x 3 uint8).

    Raises :class:`InputError` naming the file and ``camera`` when the file is missing or cannot be
    decoded.
    """
    av = import_av()
    if not path.exists():
        raise InputError(f"{path}: video of camera {camera!r} does not exist; expected an MP4 file for this camera")
    times, frames = [], []
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise InputError(f"{path}: camera {camera!r}: the file holds no video stream; expected a video")
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            for frame in container.decode(stream):
                if frame.pts is None:
                    raise InputError(f"{path}: camera {camera!r}: a frame without a time stamp; expected timed frames")
                times.append(float(frame.pts * stream.time_base))
                frames.append(resize(frame, size))
    except (av.FFmpegError, OSError, ValueError) as err:
        detail = " ".join(str(err).split())
        raise InputError(f"{path}: camera {camera!r}: not a decodable video ({type(err).__name__}: {detail})") from None
    if not frames:
        raise InputError(f"{path}: camera {camera!r}: the video has no frames; expected one frame per table row")
    return np.asarray(times), np.stack(frames)


def align(
    video_times: np.ndarray,
    wanted: np.ndarray,
    *,
    tolerance: float,
    path: Path,
    camera: str,
    labels: Sequence[str],
) -> np.ndarray:
    """Index of the video frame of each ``wanted`` time (s), within ``tolerance``; ``labels`` name the rows."""
    order = np.argsort(video_times, kind="stable")
    sorted_times = video_times[order]
    last = int(np.argmax(wanted))
    # past the end by more than half a frame: the video is shorter (a smaller gap is a timing mismatch)
    half_frame = 0.5 * float(np.median(np.diff(sorted_times))) if len(sorted_times) > 1 else 0.0
    if wanted[last] > sorted_times[-1] + max(tolerance, half_frame):
        raise InputError(
            f"{path}: camera {camera!r}: the video ends at {sorted_times[-1]:.4f} s ({len(video_times)} frames) "
            f"but the table needs a frame at {wanted[last]:.4f} s ({labels[last]}); "
            "expected a video as long as its table"
        )
    right = np.clip(np.searchsorted(sorted_times, wanted), 1, len(sorted_times) - 1)
    left = right - 1
    nearest = np.where(np.abs(sorted_times[left] - wanted) <= np.abs(sorted_times[right] - wanted), left, right)
    if len(sorted_times) == 1:
        nearest = np.zeros(len(wanted), dtype=np.int64)
    gap = np.abs(sorted_times[nearest] - wanted)
    bad = np.flatnonzero(gap > tolerance)
    if bad.size:
        i = int(bad[0])
        raise InputError(
            f"{path}: camera {camera!r}: {bad.size} table timestamp(s) have no video frame within {tolerance:g} s "
            f"(e.g. {labels[i]} at {wanted[i]:.4f} s; nearest frame {sorted_times[nearest[i]]:.4f} s); "
            "expected the video's frame times to match the table's timestamps"
        )
    return order[nearest]


def encode_video(frames: np.ndarray, path: str | os.PathLike, fps: float, *, crf: int = 12) -> Path:
    """Write ``frames`` (n x height x width x 3 uint8 RGB; even sides) as an MP4 at ``fps`` Hz.

    Frame ``i`` is shown at ``i / fps`` s. H.264 (yuv420p, quality ``crf``, a key frame every 2 frames
    as LeRobot writes them) where FFmpeg has an H.264 encoder, else MPEG-4 part 2.
    """
    av = import_av()
    n, height, width, _ = frames.shape
    if height % 2 or width % 2:
        raise InputError(f"{path}: frames of {height} x {width} pixels; expected even sides for a yuv420p video")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    codec = next(c for c in _ENCODERS if c in av.codecs_available)
    rate = Fraction(fps).limit_denominator(1001)
    with av.open(str(path), "w", format="mp4") as container:
        stream = container.add_stream(codec, rate=rate)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.time_base = 1 / rate
        if codec == "mpeg4":
            stream.options = {"qscale": "2", "g": "2"}
        else:
            stream.options = {"crf": str(crf), "g": "2", "preset": "veryfast"}
        for i in range(n):
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(frames[i]), format="rgb24")
            frame.pts = i
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
    return path


# -- ROS image messages -------------------------------------------------------------------------------
#: Raw ``sensor_msgs/Image`` encodings read: name -> (channels, RGB order of the channels, bytes per value).
_RAW = {
    "rgb8": (3, (0, 1, 2), 1),
    "rgba8": (4, (0, 1, 2), 1),
    "bgr8": (3, (2, 1, 0), 1),
    "bgra8": (4, (2, 1, 0), 1),
    "8uc3": (3, (2, 1, 0), 1),  # OpenCV's order
    "mono8": (1, (0, 0, 0), 1),
    "8uc1": (1, (0, 0, 0), 1),
    "mono16": (1, (0, 0, 0), 2),
    "16uc1": (1, (0, 0, 0), 2),
}


def raw_image(msg, size: int, *, where: str) -> np.ndarray:
    """A ``sensor_msgs/Image`` as ``size x size x 3`` uint8 RGB (16-bit values scaled to 8 bits)."""
    av = import_av()
    encoding = str(msg.encoding).lower()
    if encoding not in _RAW:
        raise InputError(f"{where}: image encoding {msg.encoding!r} not understood; expected one of {sorted(_RAW)}")
    channels, rgb, nbytes = _RAW[encoding]
    height, width, step = int(msg.height), int(msg.width), int(msg.step)
    data = np.asarray(msg.data, dtype=np.uint8)
    if height * step > data.size or width * channels * nbytes > step:
        raise InputError(
            f"{where}: image of {height} x {width} ({msg.encoding}, step {step}) but {data.size} bytes; "
            "expected height * step bytes"
        )
    rows = data[: height * step].reshape(height, step)[:, : width * channels * nbytes]
    if nbytes == 2:
        dtype = ">u2" if int(msg.is_bigendian) else "<u2"
        pixels = (rows.copy().view(dtype).astype(np.uint32) >> 8).astype(np.uint8)
    else:
        pixels = rows
    image = np.ascontiguousarray(pixels.reshape(height, width, channels)[:, :, list(rgb)])
    return resize(av.VideoFrame.from_ndarray(image, format="rgb24"), size)


def compressed_image(msg, size: int, *, where: str) -> np.ndarray:
    """A ``sensor_msgs/CompressedImage`` (JPEG, PNG ...) as ``size x size x 3`` uint8 RGB."""
    av = import_av()
    try:
        with av.open(io.BytesIO(np.asarray(msg.data, dtype=np.uint8).tobytes())) as container:
            frame = next(container.decode(video=0))
            return resize(frame, size)
    except (av.FFmpegError, OSError, ValueError, StopIteration) as err:
        detail = " ".join(str(err).split()) or type(err).__name__
        raise InputError(
            f"{where}: compressed image (format {msg.format!r}) cannot be decoded ({detail}); expected JPEG or PNG data"
        ) from None
