import numpy as np
import pytest

from extract.samplers import (
    centered_windows,
    clip_centre_times,
    dense_clips,
    fixed_fps_indices,
    frame_times,
    hcrn_clips,
    strided_indices,
    uniform_indices,
)


def test_uniform_long_video_takes_first_and_last():
    assert uniform_indices(31, 4).tolist() == [0, 10, 20, 30]
    assert uniform_indices(100, 16).tolist() == [0, 7, 13, 20, 26, 33, 40, 46, 53, 59, 66, 73, 79, 86, 92, 99]
    assert uniform_indices(16, 16).tolist() == list(range(16))


def test_uniform_short_video_edge_padded():
    assert uniform_indices(5, 8).tolist() == [0, 1, 2, 3, 4, 4, 4, 4]
    assert uniform_indices(1, 3).tolist() == [0, 0, 0]


def test_uniform_rejects_bad_input():
    with pytest.raises(ValueError):
        uniform_indices(0, 4)
    with pytest.raises(ValueError):
        uniform_indices(4, 0)


def test_centered_windows_clamped():
    w = centered_windows([0, 10, 19], 20, 4)
    assert w.tolist() == [[0, 0, 0, 1], [8, 9, 10, 11], [17, 18, 19, 19]]
    w16 = centered_windows([8], 100, 16)
    assert w16.tolist() == [list(range(0, 16))]
    assert centered_windows([0], 1, 3).tolist() == [[0, 0, 0]]


def test_hcrn_clips_centres_and_edges():
    clips = hcrn_clips(100)
    assert clips.shape == (8, 16)
    centres = [11, 22, 33, 44, 55, 66, 77, 88]  # linspace(0, 100, 10)[1:9] truncated
    for clip, c in zip(clips, centres, strict=True):
        assert clip.tolist() == list(range(c - 8, c + 8))
    short = hcrn_clips(10, num_clips=2, clip_len=4)
    # linspace(0, 10, 4) = [0, 3.33, 6.67, 10] -> centres 3, 6
    assert short.tolist() == [[1, 2, 3, 4], [4, 5, 6, 7]]
    tiny = hcrn_clips(3, num_clips=8, clip_len=16)
    assert tiny.min() == 0 and tiny.max() == 2 and tiny.shape == (8, 16)
    assert (np.diff(tiny, axis=1) >= 0).all()


def test_fixed_fps_masn():
    # 30 fps, 4 s = 120 frames -> 24 samples at 6 fps (every 5th frame) -> keep 1 of 4: 6 samples
    idx, mask = fixed_fps_indices(120, 30.0)
    assert idx.tolist() == [0, 20, 40, 60, 80, 100] and mask.all()
    idx, mask = fixed_fps_indices(120, 30.0, max_len=8)
    assert idx.tolist() == [0, 20, 40, 60, 80, 100, 100, 100]
    assert mask.tolist() == [True] * 6 + [False] * 2
    idx, mask = fixed_fps_indices(120, 30.0, max_len=4)
    assert idx.tolist() == [0, 20, 40, 60] and mask.all()


def test_fixed_fps_low_rate_source_repeats_frames():
    # a 3 fps GIF of 4 frames resampled to 6 fps repeats every frame; keep_every=1 keeps them all
    idx, mask = fixed_fps_indices(4, 3.0, target_fps=6.0, keep_every=1)
    assert idx.tolist() == [0, 0, 1, 1, 2, 2, 3, 3] and mask.all()
    idx, mask = fixed_fps_indices(1, 10.0, max_len=3)
    assert idx.tolist() == [0, 0, 0] and mask.tolist() == [True, False, False]


def test_dense_clips_and_times():
    clips = dense_clips(20, clip_len=4, stride=8)
    assert clips.tolist() == [[0, 1, 2, 3], [8, 9, 10, 11], [16, 17, 18, 19]]
    clips = dense_clips(10, clip_len=16, stride=8)
    assert clips.shape == (2, 16)
    assert clips[0].tolist() == list(range(10)) + [9] * 6
    assert clips[1].tolist() == [8, 9] + [9] * 14
    times = clip_centre_times(dense_clips(20, clip_len=4, stride=8), fps=2.0)
    assert times.tolist() == [1.0, 5.0, 9.0]
    assert strided_indices(10, 3).tolist() == [0, 3, 6, 9]
    assert frame_times([0, 3, 6], 3.0).tolist() == [0.0, 1.0, 2.0]
