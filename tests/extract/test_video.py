import numpy as np
import pytest

from extract.video import Video, VideoDecodeError, open_video, read_frames, resized_shape

FORMATS = ["mp4", "avi", "mkv", "gif", "gray_gif", "gray_mp4", "alpha_gif", "one_frame_mp4", "one_frame_gif"]


@pytest.mark.parametrize("name", FORMATS)
def test_reads_requested_frames_as_rgb_uint8(sample_videos, frame_index_of, name):
    v = sample_videos[name]
    info = open_video(v.path)
    assert info.num_frames == v.num_frames
    assert (info.height, info.width) == (v.height, v.width)
    assert info.fps == pytest.approx(v.fps, rel=0.02)
    wanted = [v.num_frames - 1, 0, v.num_frames // 2, 0]
    frames = read_frames(v.path, wanted)
    assert frames.dtype == np.uint8 and frames.shape == (4, v.height, v.width, 3)
    assert [frame_index_of(f) for f in frames] == wanted
    strip = frames[:, -2, v.width // 2].astype(int)  # bottom strip: pure red or mid grey
    if v.colour:
        assert (strip[:, 0] > 200).all() and (strip[:, 1:] < 60).all()
    else:
        assert (abs(strip - 128) < 20).all()


def test_resize_keeps_aspect_and_content(sample_videos, frame_index_of):
    v = sample_videos["mp4"]  # 48 x 64
    frames = read_frames(v.path, [3, 17], size=36)
    assert frames.shape == (2, 36, 48, 3)
    assert [frame_index_of(f) for f in frames] == [3, 17]


def test_large_video_resized_while_decoding(sample_videos, frame_index_of):
    v = sample_videos["large_mp4"]  # 720 x 1280
    with Video(v.path, size=64) as video:
        assert (video.info.height, video.info.width) == (720, 1280)
        frames = video.read([4, 1])
    assert frames.shape == (2, 64, 114, 3)
    assert [frame_index_of(f) for f in frames] == [4, 1]


def test_resized_shape():
    assert resized_shape(720, 1280, 112) == (112, 199)
    assert resized_shape(1280, 720, 112) == (199, 112)
    assert resized_shape(48, 64, None) == (48, 64)


def test_chunked_reads_of_one_open_video(sample_videos, frame_index_of):
    v = sample_videos["long_mp4"]
    with Video(v.path, size=32) as video:
        got = []
        for start in range(0, v.num_frames, 128):
            chunk = video.read(np.arange(start, min(start + 128, v.num_frames), 37))
            got += [frame_index_of(f) for f in chunk]
    assert got == [i % 64 for i in range(0, 300) if (i % 128) % 37 == 0]


def test_out_of_range_index(sample_videos):
    with pytest.raises(IndexError, match="frame indices"):
        read_frames(sample_videos["gif"].path, [12])


@pytest.mark.parametrize(
    "name, reason",
    [
        ("missing", "file not found"),
        ("empty", "empty file"),
        ("corrupt", "cannot open"),
        ("truncated", "cannot open"),
        ("not_video", "cannot open"),
        ("corrupt_mid", "decod"),
    ],
)
def test_bad_files_raise_decode_error_naming_the_file(bad_videos, name, reason):
    path = bad_videos[name]
    with pytest.raises(VideoDecodeError, match=reason) as info:
        read_frames(path, [0, 10, 20, 39])
    assert info.value.path == path
    assert str(path) in str(info.value)


def test_decode_error_pickles():
    import pickle

    err = pickle.loads(pickle.dumps(VideoDecodeError("/x/y.mp4", "empty file (0 bytes)")))
    assert err.reason == "empty file (0 bytes)" and str(err.path) == "/x/y.mp4"


@pytest.mark.parametrize(
    "size", [18, 33, 36, 54, 60]
)  # widths 24, 44, 48, 72, 80: decord's batch copy fails on some
def test_every_output_width_reads_correct_frames(sample_videos, frame_index_of, size):
    v = sample_videos["mp4"]
    with Video(v.path, size=size) as video:
        first = video.read([0, 1, 2, 9, 30])
        again = video.read([30, 2])
    assert first.shape[1:] == (size, round(64 * size / 48), 3)
    assert [frame_index_of(f) for f in first] == [0, 1, 2, 9, 30]
    assert [frame_index_of(f) for f in again] == [30, 2]
    assert (first[:, -1, :, 0] > 180).mean() > 0.9  # red strip intact: rows are not shifted
