"""Writing small videos: used by the demo dataset generator and by the tests that need real files.

MP4 and AVI go through PyAV (FFmpeg's encoders); GIF through Pillow so palette, frame durations and
the GIF habit of merging identical consecutive frames are those of real animated GIFs.

The same frames give the same bytes. x264's macroblock-tree rate control (``mbtree``) made the output of
small frames (64 x 64) differ from one encoding of the same frames to the next (2 to 7 different files in
8 encodings of a 105-frame clip, a few bytes apart: the demo data's sizes changed between two runs with
one seed), so it is off (``mbtree=0``, quality set by ``crf`` alone). The encoder also runs one thread
(x264's threaded output depends on the core count), every frame carries its own timestamp, and the muxer
and encoder run in FFmpeg's bit-exact mode (no library version strings, creation times or random ids).
"""

from __future__ import annotations

import os
from fractions import Fraction
from pathlib import Path

import numpy as np

from pipelines.atomic import atomic_path

_CODECS = {".mp4": ("libx264", "yuv420p"), ".avi": ("mpeg4", "yuv420p"), ".mkv": ("libx264", "yuv420p")}


def write_video(path: str | os.PathLike, frames: np.ndarray, *, fps: float = 10.0) -> Path:
    """Write ``frames`` to ``path``; the container follows the suffix (.mp4, .avi, .mkv or .gif).

    Args:
        path: output file; written atomically.
        frames: (T, H, W, 3) RGB or (T, H, W) grayscale, uint8. H and W are rounded down to even
            sizes for the YUV 4:2:0 encoders.
        fps: frame rate (GIFs store it as a per-frame duration in milliseconds).

    Returns:
        The path written.
    """
    path = Path(path)
    frames = np.asarray(frames)
    if frames.dtype != np.uint8 or frames.ndim not in (3, 4) or len(frames) == 0:
        raise ValueError(
            f"frames must be a non-empty uint8 (T,H,W[,3]) array, got {frames.dtype} {frames.shape}"
        )
    suffix = path.suffix.lower()
    with atomic_path(path) as tmp:
        if suffix == ".gif":
            _write_gif(tmp, frames, fps)
        elif suffix in _CODECS:
            _write_ffmpeg(tmp, frames, fps, suffix)
        else:
            raise ValueError(
                f"cannot write {path}: unsupported suffix {suffix!r} (use .mp4, .avi, .mkv, .gif)"
            )
    return path


def _write_gif(tmp: Path, frames: np.ndarray, fps: float) -> None:
    from PIL import Image

    mode = "L" if frames.ndim == 3 else "RGB"
    images = [Image.fromarray(f, mode=mode) for f in frames]
    duration = max(int(round(1000.0 / fps)), 20)
    images[0].save(tmp, format="GIF", save_all=True, append_images=images[1:], duration=duration, loop=0)


def _write_ffmpeg(tmp: Path, frames: np.ndarray, fps: float, suffix: str) -> None:
    import av

    if frames.ndim == 3:
        frames = np.repeat(frames[..., None], 3, axis=-1)
    t, h, w, _ = frames.shape
    h2, w2 = h - h % 2, w - w % 2
    codec, pix_fmt = _CODECS[suffix]
    rate = Fraction(fps).limit_denominator(1000)
    container = av.open(str(tmp), mode="w", format={".mp4": "mp4", ".avi": "avi", ".mkv": "matroska"}[suffix])
    try:
        container.flags |= av.container.Flags.bitexact.value
        stream = container.add_stream(codec, rate=rate)
        stream.width, stream.height, stream.pix_fmt = w2, h2, pix_fmt
        stream.time_base = 1 / rate
        cc = stream.codec_context
        cc.thread_count, cc.thread_type = 1, "NONE"
        cc.flags |= av.codec.context.Flags.bitexact.value
        if codec == "libx264":
            stream.options = {"crf": "18", "preset": "veryfast", "threads": "1", "x264-params": "mbtree=0"}
        else:
            stream.bit_rate = 4_000_000
        for index, frame in enumerate(frames):
            vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame[:h2, :w2]), format="rgb24")
            vf.pts, vf.time_base = index, 1 / rate
            for packet in stream.encode(vf):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    finally:
        container.close()
