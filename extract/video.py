"""Video reading with decord: only the frames a sampler asks for, RGB uint8, resized early.

Every container FFmpeg reads works (mp4, avi, mkv, webm, mov, gif). decord converts every pixel
format (palette GIFs, grayscale, YUV, alpha) to RGB24, so frames always come out as
``(N, H, W, 3) uint8``. When a size is requested the reader is opened with decord's ``width`` /
``height`` arguments, so FFmpeg scales each frame right after decoding and full-size frames never
accumulate. ``Video.read`` decodes only the requested indices (``get_batch``): a 10-minute video is
never held in memory as a whole; callers read it in bounded chunks.

A file that is missing, empty, not a video or fails to decode raises ``VideoDecodeError`` naming the
file and the reason; no frame is ever replaced by zeros.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch  # noqa: F401  (must be loaded before decord, see below)

import decord  # isort: skip

# decord2 dlopens every shared library of the ``nvidia`` pip packages with RTLD_GLOBAL when it is
# imported, libnvblas included; if that happens before torch is loaded, NVBLAS takes over torch's
# CPU matrix products and the process crashes (segfault in nn.Linear). Loading torch first keeps
# torch's own BLAS bound. Every module of this toolkit reads video through this one.
decord.logging.set_level(decord.logging.QUIET)  # errors reach the caller as VideoDecodeError instead

# What decord raises: RuntimeError when FFmpeg cannot open the file, DECORDError (and its subclass
# DECORDLimitReachedError) when a packet fails to decode, AssertionError for a zero frame count,
# IndexError for indices beyond the frame count FFmpeg reported.
_DECORD_ERRORS = (decord.DECORDError, RuntimeError, AssertionError, IndexError)

#: Frames larger than this many pixels (width x height as the file declares them) are refused before
#: anything is decoded: a 228-byte GIF declaring a 12000x12000 canvas costs ~4.5 GB to decode. The default
#: admits 8K UHD (7680x4320 = 33.2 M); ``vqa-extract --max-pixels`` changes it.
DEFAULT_MAX_PIXELS = 40_000_000


class VideoDecodeError(Exception):
    """A video could not be read. ``path`` is the file, ``reason`` says what went wrong."""

    def __init__(self, path: str | os.PathLike, reason: str):
        self.path = Path(path)
        self.reason = reason
        super().__init__(f"cannot read video {self.path}: {reason}")

    def __reduce__(self):  # picklable across Ray workers
        return (VideoDecodeError, (str(self.path), self.reason))


@dataclass(frozen=True)
class VideoInfo:
    """Stream facts as decord reports them. ``height`` / ``width`` are the decoded (source) size."""

    num_frames: int
    fps: float
    height: int
    width: int

    @property
    def duration(self) -> float:
        """Seconds, ``num_frames / fps``."""
        return self.num_frames / self.fps


def resized_shape(height: int, width: int, size: int | None) -> tuple[int, int]:
    """(H', W') with the shorter side equal to ``size`` and the aspect ratio kept; unchanged for None."""
    if size is None:
        return height, width
    if size <= 0:
        raise ValueError(f"size must be positive, got {size}")
    if height <= width:
        return size, max(1, int(round(width * size / height)))
    return max(1, int(round(height * size / width))), size


def _check_file(path: Path) -> None:
    if not path.exists():
        raise VideoDecodeError(path, "file not found")
    if not path.is_file():
        raise VideoDecodeError(path, "not a regular file")
    if path.stat().st_size == 0:
        raise VideoDecodeError(path, "empty file (0 bytes)")


def _open_reader(path: Path, width: int = -1, height: int = -1, num_threads: int = 1) -> decord.VideoReader:
    try:
        return decord.VideoReader(
            str(path), ctx=decord.cpu(0), width=width, height=height, num_threads=num_threads
        )
    except _DECORD_ERRORS as err:
        raise VideoDecodeError(
            path, f"FFmpeg cannot open it as a video ({type(err).__name__}: {err})"
        ) from err


def _check_declared_size(path: Path, max_pixels: int | None) -> None:
    """Refuse a video whose declared frame size exceeds ``max_pixels``, reading only its headers."""
    if max_pixels is None:
        return
    try:
        import av

        with av.open(str(path)) as container:
            if not container.streams.video:
                return
            ctx = container.streams.video[0].codec_context
            width, height = int(ctx.width), int(ctx.height)
    except Exception:  # noqa: BLE001 - unreadable headers: decord reports why when it opens the file
        return
    if width * height > max_pixels:
        raise VideoDecodeError(
            path,
            f"frames of {width}x{height} ({width * height} pixels) exceed the limit of {max_pixels} pixels "
            "(--max-pixels); refused before decoding",
        )


class Video:
    """An open video file. Reads selected frames, resized so the shorter side is ``size``.

    Args:
        path: the video file.
        size: shorter side of the returned frames (aspect kept); None keeps the source size.
        shape: (H, W) of the returned frames instead, aspect not kept (C3D's 128x171); overrides ``size``.
        num_threads: FFmpeg decoding threads (1 suits one decode worker per CPU core).
        max_pixels: refuse frames larger than this (declared width x height) before decoding; None: no
            limit.

    Raises:
        VideoDecodeError: missing, empty, unreadable or undecodable file, or frames above ``max_pixels``.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        *,
        size: int | None = None,
        num_threads: int = 1,
        max_pixels: int | None = DEFAULT_MAX_PIXELS,
        shape: tuple[int, int] | None = None,
    ):
        self.path = Path(path)
        _check_file(self.path)
        _check_declared_size(self.path, max_pixels)
        reader = _open_reader(self.path, num_threads=num_threads)
        try:
            num_frames = len(reader)
            fps = float(reader.get_avg_fps())
            first = reader.next().asnumpy()  # decodes one frame: the true output size, and proof it decodes
        except (*_DECORD_ERRORS, StopIteration) as err:
            raise VideoDecodeError(
                self.path, f"first frame does not decode ({type(err).__name__}: {err})"
            ) from err
        if num_frames <= 0:
            raise VideoDecodeError(self.path, "no video frames")
        if not np.isfinite(fps) or fps <= 0:
            raise VideoDecodeError(self.path, f"invalid frame rate {fps}")
        height, width = first.shape[:2]
        self.info = VideoInfo(num_frames=num_frames, fps=fps, height=int(height), width=int(width))
        self.size = size
        if shape is not None:
            self.out_height, self.out_width = (int(shape[0]), int(shape[1]))
        else:
            self.out_height, self.out_width = resized_shape(self.info.height, self.info.width, size)
        if (self.out_height, self.out_width) != (self.info.height, self.info.width):
            reader = _open_reader(
                self.path, width=self.out_width, height=self.out_height, num_threads=num_threads
            )
        self._reader = reader

    def read(self, indices) -> np.ndarray:
        """Decode the frames at ``indices`` (any order, repeats allowed; repeats decode once).

        Args:
            indices: 1-D integer array-like, each in ``[0, num_frames)``.

        Returns:
            (len(indices), H', W', 3) uint8 RGB.
        """
        idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        if idx.size == 0:
            return np.zeros((0, self.out_height, self.out_width, 3), dtype=np.uint8)
        if idx.min() < 0 or idx.max() >= self.info.num_frames:
            raise IndexError(
                f"{self.path}: frame indices must lie in [0, {self.info.num_frames}), "
                f"got {idx.min()}..{idx.max()}"
            )
        unique, inverse = np.unique(idx, return_inverse=True)
        try:
            frames = self._reader.get_batch(unique.tolist()).asnumpy()
        except decord.DECORDError as err:
            if "DECORDArrayCopyFromTo" not in str(err):
                raise VideoDecodeError(self.path, f"decoding failed ({type(err).__name__}: {err})") from err
            frames = self._read_one_by_one(unique)
        except _DECORD_ERRORS as err:
            raise VideoDecodeError(self.path, f"decoding failed ({type(err).__name__}: {err})") from err
        if frames.shape != (len(unique), self.out_height, self.out_width, 3):
            raise VideoDecodeError(self.path, f"decoder returned frames of shape {frames.shape}")
        return np.ascontiguousarray(frames[inverse], dtype=np.uint8)

    def _read_one_by_one(self, unique: np.ndarray) -> np.ndarray:
        """Fallback for output widths where decord's batch copy fails (e.g. 16, 24, 48, 72 px).

        decord then hands out frames whose rows keep FFmpeg's padding (the array looks like
        (H, W', C') with W' * C' bytes per row); the first W * 3 bytes of each row are the pixels.
        Sorted indices are decoded sequentially, seeking only across gaps.
        """
        h, w = self.out_height, self.out_width
        out = np.empty((len(unique), h, w, 3), dtype=np.uint8)
        position = None  # the reader's position is unknown after get_batch: seek first
        try:
            for k, i in enumerate(unique.tolist()):
                if position is None or i != position + 1:
                    self._reader.seek_accurate(i)
                raw = self._reader.next().asnumpy()
                position = i
                if raw.size % h or raw.size // h < w * 3:
                    raise VideoDecodeError(self.path, f"decoder returned a frame of shape {raw.shape}")
                out[k] = raw.reshape(h, raw.size // h)[:, : w * 3].reshape(h, w, 3)
        except (*_DECORD_ERRORS, StopIteration) as err:
            raise VideoDecodeError(self.path, f"decoding failed ({type(err).__name__}: {err})") from err
        return out

    def close(self) -> None:
        self._reader = None

    def __enter__(self) -> Video:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def open_video(path: str | os.PathLike) -> VideoInfo:
    """Frame count, frame rate and size of a video (decodes one frame to prove the file is readable).

    Raises:
        VideoDecodeError: missing, empty, unreadable or undecodable file.
    """
    with Video(path) as video:
        return video.info


def read_frames(
    path: str | os.PathLike, indices, *, size: int | None = None, num_threads: int = 1
) -> np.ndarray:
    """Decode only the frames at ``indices`` of ``path``.

    Args:
        path: the video file.
        indices: frame indices (repeats allowed).
        size: shorter side of the output (aspect kept), applied by FFmpeg while decoding; None = source size.
        num_threads: FFmpeg decoding threads.

    Returns:
        (len(indices), H', W', 3) uint8 RGB.

    Raises:
        VideoDecodeError: missing, empty, unreadable or undecodable file.
    """
    with Video(path, size=size, num_threads=num_threads) as video:
        return video.read(indices)
