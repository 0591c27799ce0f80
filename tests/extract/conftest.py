"""Shared fixtures for the extraction tests: real small video files written with FFmpeg / Pillow.

Every frame carries its own index: the top three quarters of the frame are split into
``CODE_BITS`` vertical bands, band ``b`` is white when bit ``b`` of the frame index is set and black
otherwise. The bottom quarter is a constant colour (pure red for colour videos, mid grey for the
grayscale ones) so tests can check the channel order. Bands are wide and binary, so the code
survives H.264 / MPEG-4 compression, GIF palettes and resizing down to 32 px.

Fixtures (session scoped, written once per test session):

- ``sample_videos``: dict name -> ``SampleVideo`` (path, num_frames, fps, height, width, colour);
  names: ``mp4``, ``square_mp4`` (48x48), ``avi``, ``mkv``, ``gif``, ``gray_gif``, ``gray_mp4``,
  ``alpha_gif``, ``one_frame_mp4``, ``one_frame_gif``, ``large_mp4`` (1280x720, 5 frames),
  ``long_mp4`` (300 frames at 30 fps, 48x32, for chunking).
- ``bad_videos``: dict name -> Path for ``corrupt`` (MP4 header then garbage), ``corrupt_mid``
  (container intact, garbage in the middle of the coded frames), ``truncated`` (first
  third of a real MP4), ``empty`` (0 bytes), ``missing`` (does not exist), ``not_video`` (a text file).
- ``video_tree``: a root folder with ``a/x.mp4``, ``b/x.mp4`` (same name, different content) and
  ``c/sub/y.gif``; returns the root path.
- ``frame_index_of``: function decoding the frame index encoded in an (H, W, 3) uint8 frame.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from pipelines.videowrite import write_video

CODE_BITS = 6  # frame indices 0..63 are distinguishable; larger videos repeat the code modulo 64


@dataclass(frozen=True)
class SampleVideo:
    path: Path
    num_frames: int
    fps: float
    height: int
    width: int
    colour: bool = True


def coded_frames(
    num_frames: int, height: int, width: int, *, colour: bool = True, offset: int = 0
) -> np.ndarray:
    """Frames whose pixels encode their index (see the module docstring).

    Args:
        num_frames: T.
        height, width: frame size (even numbers for the YUV encoders).
        colour: RGB with a red bottom strip; otherwise (T, H, W) grayscale with a grey strip.
        offset: added to the encoded index, so two videos of the same length differ.

    Returns:
        (T, H, W, 3) or (T, H, W) uint8.
    """
    code_h = (height * 3) // 4
    band_w = width // CODE_BITS
    frames = np.zeros((num_frames, height, width, 3), dtype=np.uint8)
    for t in range(num_frames):
        code = (t + offset) % (1 << CODE_BITS)
        for b in range(CODE_BITS):
            if code >> b & 1:
                frames[t, :code_h, b * band_w : (b + 1) * band_w] = 255
    if colour:
        frames[:, code_h:, :, 0] = 255
        return frames
    frames[:, code_h:] = 128
    return frames[..., 0].copy()


def decode_frame_index(frame: np.ndarray) -> int:
    """Inverse of ``coded_frames`` for one decoded (H, W, 3) or (H, W) uint8 frame."""
    frame = np.asarray(frame, dtype=np.float32)
    if frame.ndim == 3:
        frame = frame.mean(axis=-1)
    h, w = frame.shape
    code_h = (h * 3) // 4
    band_w = w / CODE_BITS
    code = 0
    for b in range(CODE_BITS):
        lo, hi = int(round(b * band_w)), int(round((b + 1) * band_w))
        margin = max((hi - lo) // 4, 0)
        band = frame[2 : max(code_h - 2, 3), lo + margin : max(hi - margin, lo + margin + 1)]
        if band.mean() > 127:
            code |= 1 << b
    return code


@pytest.fixture(scope="session")
def frame_index_of():
    return decode_frame_index


def _write_alpha_gif(path: Path, num_frames: int, height: int, width: int, fps: float) -> None:
    from PIL import Image

    rgb = coded_frames(num_frames, height, width)
    images = []
    for f in rgb:
        rgba = np.concatenate([f, np.full(f.shape[:2] + (1,), 255, np.uint8)], axis=-1)
        rgba[0, 0, 3] = 0  # one transparent pixel: the GIF gets a transparency index
        images.append(Image.fromarray(rgba, mode="RGBA"))
    images[0].save(
        path,
        format="GIF",
        save_all=True,
        append_images=images[1:],
        duration=int(1000 / fps),
        loop=0,
        disposal=2,
    )


@pytest.fixture(scope="session")
def sample_videos(tmp_path_factory) -> dict[str, SampleVideo]:
    root = tmp_path_factory.mktemp("videos")
    out: dict[str, SampleVideo] = {}

    def add(name, suffix, t, h, w, fps=10.0, colour=True):
        path = root / f"{name}{suffix}"
        write_video(path, coded_frames(t, h, w, colour=colour), fps=fps)
        out[name] = SampleVideo(path, t, fps, h, w, colour)

    add("mp4", ".mp4", 40, 48, 64)
    add("square_mp4", ".mp4", 40, 48, 48)  # centre crops keep the whole frame: its code stays readable
    add("avi", ".avi", 20, 48, 64, fps=25.0)
    add("mkv", ".mkv", 12, 48, 64)
    add("gif", ".gif", 12, 48, 64)
    add("gray_gif", ".gif", 10, 48, 64, colour=False)
    add("gray_mp4", ".mp4", 10, 48, 64, colour=False)
    add("one_frame_mp4", ".mp4", 1, 48, 64)
    add("one_frame_gif", ".gif", 1, 48, 64)
    add("large_mp4", ".mp4", 5, 720, 1280)
    add("long_mp4", ".mp4", 300, 32, 48, fps=30.0)
    alpha = root / "alpha_gif.gif"
    _write_alpha_gif(alpha, 8, 48, 64, 10.0)
    out["alpha_gif"] = SampleVideo(alpha, 8, 10.0, 48, 64)
    return out


@pytest.fixture(scope="session")
def bad_videos(tmp_path_factory, sample_videos) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("bad_videos")
    good = sample_videos["mp4"].path.read_bytes()
    rng = np.random.default_rng(0)
    corrupt = root / "corrupt.mp4"
    corrupt.write_bytes(good[:64] + rng.integers(0, 256, size=4096, dtype=np.uint8).tobytes())
    mdat, moov = good.find(b"mdat"), good.find(b"moov")
    start, stop = mdat + (moov - mdat) // 2, mdat + (moov - mdat) * 4 // 5
    corrupt_mid = root / "corrupt_mid.mp4"  # container intact, coded frames in the middle are garbage
    corrupt_mid.write_bytes(
        good[:start] + rng.integers(0, 256, size=stop - start, dtype=np.uint8).tobytes() + good[stop:]
    )
    truncated = root / "truncated.mp4"
    truncated.write_bytes(good[: len(good) // 3])
    empty = root / "empty.mp4"
    empty.write_bytes(b"")
    not_video = root / "notes.avi"
    not_video.write_text("this is not a video\n" * 20)
    return {
        "corrupt": corrupt,
        "corrupt_mid": corrupt_mid,
        "truncated": truncated,
        "empty": empty,
        "missing": root / "does_not_exist.mp4",
        "not_video": not_video,
    }


@pytest.fixture(scope="session")
def video_tree(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("video_tree")
    write_video(root / "a" / "x.mp4", coded_frames(12, 48, 64, offset=0), fps=10.0)
    write_video(root / "b" / "x.mp4", coded_frames(12, 48, 64, offset=20), fps=10.0)
    write_video(root / "c" / "sub" / "y.gif", coded_frames(6, 48, 64, offset=40), fps=10.0)
    return root
