"""Frame-index samplers: small pure functions from a video's frame count (and frame rate) to indices.

None of them touches a file; the feature sets pass their output to ``extract.video.Video.read``.
Every index returned lies in ``[0, T)``; videos shorter than a sampler needs are edge-padded
(the first / last frame repeated), never zero-filled.

Samplers and the papers they follow:

- ``uniform_indices``: MSPAN's N frames (N = 16) spread uniformly over the video.
- ``centered_windows``: a W-frame window centred on each sampled frame (MSPAN's motion, W = 16;
  MASN's I3D input, W = 8).
- ``hcrn_clips``: HCRN's 8 clips of 16 consecutive frames centred at ``linspace(0, T, 10)[1:9]``.
- ``fixed_fps_indices``: MASN's frames: the video resampled to 6 fps, one of every 4 kept, padded or
  truncated to a maximum length with a validity mask. With ``keep_every=1`` it is a plain fixed-rate
  sampler (SiaSamRea's dense frames).
- ``dense_clips``: a ``clip_len``-frame clip every ``stride`` frames (CMIN's C3D-style clip features).
"""

from __future__ import annotations

import numpy as np


def _check_length(num_frames: int) -> int:
    num_frames = int(num_frames)
    if num_frames < 1:
        raise ValueError(f"a video needs at least one frame, got num_frames={num_frames}")
    return num_frames


def uniform_indices(num_frames: int, n: int) -> np.ndarray:
    """N frame indices spread uniformly over a T-frame video (MSPAN's frame sampling).

    When T >= N: ``round(linspace(0, T - 1, N))``, so the first and the last frame are always taken.
    When T < N: every frame once, then the last frame repeated (edge padding) up to N.

    Args:
        num_frames: T >= 1.
        n: N >= 1.

    Returns:
        (N,) int64, non-decreasing.
    """
    t = _check_length(num_frames)
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    if t < n:
        return np.concatenate([np.arange(t), np.full(n - t, t - 1)]).astype(np.int64)
    return np.rint(np.linspace(0, t - 1, n)).astype(np.int64)


def centered_windows(centers, num_frames: int, w: int) -> np.ndarray:
    """A W-frame window of consecutive frames centred on each centre, clamped to the video's edges.

    The window of centre c is ``c - W // 2, ..., c + (W - 1) - W // 2`` (for W = 16: c - 8 .. c + 7);
    indices before the first or after the last frame are replaced by the first / last frame.

    Args:
        centers: (K,) frame indices.
        num_frames: T >= 1.
        w: W >= 1.

    Returns:
        (K, W) int64.
    """
    t = _check_length(num_frames)
    if w < 1:
        raise ValueError(f"w must be >= 1, got {w}")
    c = np.asarray(centers, dtype=np.int64).reshape(-1, 1)
    offsets = np.arange(w, dtype=np.int64) - w // 2
    return np.clip(c + offsets[None, :], 0, t - 1)


def hcrn_clips(num_frames: int, num_clips: int = 8, clip_len: int = 16) -> np.ndarray:
    """HCRN's clips: ``num_clips`` clips of ``clip_len`` consecutive frames.

    Clip centres are ``linspace(0, T, num_clips + 2)[1:num_clips + 1]`` truncated to integers
    (HCRN's preprocess/preprocess_features.py); each clip is ``centre - clip_len // 2`` to
    ``centre + clip_len // 2 - 1``. Near the edges HCRN repeats the first or last frame to fill the
    clip; we do the same by clamping (its code also drops the very last frame of a clip that
    reaches the end of the video; we keep it: the clip is then the last frames plus repeats of the final one).

    Args:
        num_frames: T >= 1.
        num_clips: number of clips (8).
        clip_len: frames per clip (16).

    Returns:
        (num_clips, clip_len) int64.
    """
    t = _check_length(num_frames)
    centres = np.linspace(0, t, num_clips + 2).astype(np.int64)[1 : num_clips + 1]
    return centered_windows(centres, t, clip_len)


def fixed_fps_indices(
    num_frames: int,
    fps: float,
    target_fps: float = 6.0,
    keep_every: int = 4,
    max_len: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Frames at a fixed rate, thinned and padded to a fixed length (MASN, Sec. 4.2).

    The video is first resampled to ``target_fps``: sample k sits at time k / target_fps and takes
    source frame ``floor(k * fps / target_fps)``, for every k whose time lies before the video's
    end (T / fps). Then one of every ``keep_every`` samples is kept (samples 0, keep_every, ...).
    With ``max_len`` the result is truncated to its first ``max_len`` entries, or padded by repeating
    the last index; ``mask`` is False on the padding.

    Args:
        num_frames: T >= 1.
        fps: the video's frame rate.
        target_fps: resampling rate (6.0 for MASN).
        keep_every: keep one resampled frame of every this many (4 for MASN).
        max_len: fixed output length (MASN: 20 for TGIF-QA, 30 for MSVD-QA / MSRVTT-QA), or None.

    Returns:
        indices: (L,) int64, L = max_len or the natural count (>= 1).
        mask: (L,) bool, True where the index is a real sample.
    """
    t = _check_length(num_frames)
    if fps <= 0 or target_fps <= 0:
        raise ValueError(f"frame rates must be positive, got fps={fps}, target_fps={target_fps}")
    if keep_every < 1:
        raise ValueError(f"keep_every must be >= 1, got {keep_every}")
    num_resampled = max(1, int(np.ceil(t * target_fps / fps - 1e-9)))
    resampled = np.minimum(np.floor(np.arange(num_resampled) * fps / target_fps + 1e-9), t - 1).astype(
        np.int64
    )
    indices = resampled[::keep_every]
    mask = np.ones(len(indices), dtype=bool)
    if max_len is not None:
        if max_len < 1:
            raise ValueError(f"max_len must be >= 1, got {max_len}")
        if len(indices) >= max_len:
            indices, mask = indices[:max_len], mask[:max_len]
        else:
            pad = max_len - len(indices)
            indices = np.concatenate([indices, np.full(pad, indices[-1], dtype=np.int64)])
            mask = np.concatenate([mask, np.zeros(pad, dtype=bool)])
    return indices, mask


def strided_indices(num_frames: int, stride: int) -> np.ndarray:
    """Every ``stride``-th frame: ``0, stride, 2 * stride, ... < T``.

    Returns:
        (ceil(T / stride),) int64.
    """
    t = _check_length(num_frames)
    if stride < 1:
        raise ValueError(f"stride must be >= 1, got {stride}")
    return np.arange(0, t, stride, dtype=np.int64)


def dense_clips(num_frames: int, clip_len: int = 16, stride: int = 8) -> np.ndarray:
    """A ``clip_len``-frame clip starting every ``stride`` frames (CMIN's clip features).

    Clip i covers frames ``i * stride .. i * stride + clip_len - 1``, for every start before the end
    of the video (so ``ceil(T / stride)`` clips and every frame is covered); frames past the end are
    replaced by the last frame. A video shorter than one clip gives one edge-padded clip.

    Args:
        num_frames: T >= 1.
        clip_len: frames per clip (16, as C3D).
        stride: frames between clip starts (8 in the ActivityNet C3D release CMIN uses).

    Returns:
        (ceil(T / stride), clip_len) int64.
    """
    t = _check_length(num_frames)
    if clip_len < 1:
        raise ValueError(f"clip_len must be >= 1, got {clip_len}")
    starts = strided_indices(t, stride)
    return np.minimum(starts[:, None] + np.arange(clip_len, dtype=np.int64)[None, :], t - 1)


def clip_centre_times(clips: np.ndarray, fps: float) -> np.ndarray:
    """Centre time in seconds of each clip: the midpoint of its first and last real frame's span.

    A frame i spans [i / fps, (i + 1) / fps); a clip's centre is the middle of the span from its
    first frame's start to its last frame's end (edge repeats add nothing).

    Args:
        clips: (K, W) frame indices.
        fps: frame rate.

    Returns:
        (K,) float64 seconds.
    """
    clips = np.asarray(clips)
    return (clips.min(axis=1) + clips.max(axis=1) + 1) / (2.0 * fps)


def frame_times(indices, fps: float) -> np.ndarray:
    """Start time in seconds of each frame index: ``i / fps``. Returns (K,) float64."""
    return np.asarray(indices, dtype=np.float64) / float(fps)
