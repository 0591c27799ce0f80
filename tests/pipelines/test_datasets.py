"""Dataset adapters on small files in the exact official formats (and malformed variants)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from pipelines.datasets import (
    DATASETS,
    DatasetFormatError,
    MomentRecord,
    QARecord,
    VideoRef,
    get_dataset,
)
from pipelines.datasets.tgif import tgif_val_rows
from pipelines.paths import UnsafePathError

# ----------------------------------------------------------------------------- official-format writers

TGIF_HEADERS = {
    "action": "gif_name\tquestion\ta1\ta2\ta3\ta4\ta5\tanswer\tvid_id\tkey",
    "transition": "gif_name\tquestion\ta1\ta2\ta3\ta4\ta5\tanswer\tvid_id\tkey",
    "count": "gif_name\tquestion\tanswer\tvid_id\tkey",
    "frameqa": "gif_name\tquestion\tanswer\ttype\tvid_id\tkey\tdescription",
}


def tgif_row(task: str, i: int, gif: str) -> str:
    if task in ("action", "transition"):
        return "\t".join([gif, f"what does the man do {i} times", "nod", "wave", "jump", "run", "sit",
                          str(i % 5), f"gif_{i}", str(100 + i)])
    if task == "count":
        return "\t".join([gif, "how many times does the cat jump", str(i % 4 + 1), f"gif_{i}", str(200 + i)])
    return "\t".join([gif, f"what is the color of the car {i}?", ["red", "blue"][i % 2], str(i % 4),
                      f"gif_{i}", str(300 + i), "a red car drives"])


def write_tgif(root: Path, n_train: int = 20, n_test: int = 4, tasks=tuple(TGIF_HEADERS)) -> Path:
    (root / "dataset").mkdir(parents=True, exist_ok=True)
    (root / "gifs").mkdir(exist_ok=True)
    for task in tasks:
        for split, n in (("Train", n_train), ("Test", n_test)):
            rows = [tgif_row(task, i, f"tumblr_{split.lower()}_{i % 7}") for i in range(n)]
            text = TGIF_HEADERS[task] + "\n" + "\n".join(rows) + "\n"
            (root / "dataset" / f"{split}_{task}_question.csv").write_text(text, encoding="utf-8")
    for split in ("train", "test"):
        for i in range(6):  # tumblr_*_6 is missing on purpose
            (root / "gifs" / f"tumblr_{split}_{i}.gif").write_bytes(b"GIF89a")
    return root


def write_msqa(root: Path, *, msvd: bool) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    questions = {
        "train": [("what is a woman cracking into a bowl?", "egg", 1), ("who is slicing a tomato?", "man", 2),
                  ("how many people dance?", "two", 1), ("is it raining", "yes", 3)],
        "val": [("where is the man?", "kitchen", 2)],
        "test": [("when does he jump?", "night", 3), ("what is sliced?", "onion", 4)],
    }
    next_id = 0
    for split, items in questions.items():
        data = []
        for q, a, vid in items:
            data.append({"answer": a, "id": next_id, "question": q, "video_id": vid})
            next_id += 1
        (root / f"{split}_qa.json").write_text(json.dumps(data), encoding="utf-8")
    if msvd:
        (root / "youtube_mapping.txt").write_text(
            "-4wsuPCjDBc_5_15 vid1\n-7KMZQEsJW4_205_208 vid2\n-8y1Q0rA3n8_108_115 vid3\nzzz_1_2 vid4\n",
            encoding="utf-8")
        (root / "YouTubeClips").mkdir()
        for clip in ("-4wsuPCjDBc_5_15", "-7KMZQEsJW4_205_208", "-8y1Q0rA3n8_108_115"):
            (root / "YouTubeClips" / f"{clip}.avi").write_bytes(b"x")
    return root


def write_anetqa(root: Path) -> Path:
    (root / "videos").mkdir(parents=True)
    splits = {"train": [("Ld8qCl0TgQU", "what is the man doing", "dancing", 0),
                        ("Ld8qCl0TgQU", "is he outdoors", "yes", 3),
                        ("v_2K1T6wbhhHI", "what color is the ball", "red", 4)],
              "val": [("2K1T6wbhhHI", "where is he", "gym", 6)],
              "test": [("abcdefghijk", "how many people", "2", 7)]}
    for split, items in splits.items():
        qs, ans = [], []
        for i, (name, q, a, t) in enumerate(items):
            qid = f"v_{name[-11:]}_{split}_{i}"
            qs.append({"video_name": name, "question_id": qid, "question": q})
            ans.append({"answer": a, "question_id": qid, "type": t})
        (root / f"{split}_q.json").write_text(json.dumps(qs))
        (root / f"{split}_a.json").write_text(json.dumps(ans))
    (root / "videos" / "v_Ld8qCl0TgQU.mp4").write_bytes(b"x")
    (root / "videos" / "v_2K1T6wbhhHI.mkv").write_bytes(b"x")
    return root


def write_how2qa(root: Path) -> Path:
    (root / "videos").mkdir(parents=True)
    for split, n in (("train", 3), ("val", 2), ("test", 1)):
        lines = []
        for i in range(n):
            lines.append(json.dumps({"vid_name": f"HXjq-P4dHHs_{i}", "ts": f"{i}.5-{i + 10}.0",
                                     "q": f"why does the man pick up the knife {i}?",
                                     "a0": "to cut bread", "a1": "to cook", "a2": "to clean it",
                                     "a3": "to sell",
                                     "answer_idx": i % 4, "qid": f"{split}-q{i}"}))
        (root / f"how2qa_{split}.jsonl").write_text("\n".join(lines) + "\n")
    (root / "videos" / "HXjq-P4dHHs_0.mp4").write_bytes(b"x")
    return root


def write_captions(root: Path) -> Path:
    (root / "videos").mkdir(parents=True)
    files = {
        "train.json": {"v_QOlSCBRmfWY": {"duration": 82.73, "timestamps": [[0.83, 19.86], [17.37, 60.81]],
                                          "sentences": ["A young woman is seen standing.",
                                                        " She then begins dancing. "]}},
        "val_1.json": {"v_uqiMw7tQ1Cc": {"duration": 55.15, "timestamps": [[0.0, 60.0]],
                                          "sentences": ["A weight lifting tutorial is given."]}},
        "val_2.json": {"v_bXdq2zI1Ms0": {"duration": 73.1, "timestamps": [[10.0, 20.5]],
                                          "sentences": ["Three men are standing on a mat."]}},
    }
    for name, data in files.items():
        (root / name).write_text(json.dumps(data))
    (root / "videos" / "v_QOlSCBRmfWY.webm").write_bytes(b"x")
    return root


def write_tacos(root: Path) -> Path:
    (root / "videos").mkdir(parents=True)
    files = {
        "train.json": {"s13-d21.avi": {"num_frames": 3000, "fps": 30.0, "timestamps": [[0, 300], [150, 900]],
                                        "sentences": ["The person takes out a knife.",
                                                      "He cuts the cucumber."]}},
        "val.json": {"s14-d26.avi": {"num_frames": 1500, "fps": 29.4, "timestamps": [[294, 588]],
                                      "sentences": ["She washes the carrot."]}},
        "test.json": {"s15-d21.avi": {"num_frames": 600, "fps": 25.0, "timestamps": [[50, 700]],
                                       "sentences": ["The person peels the orange."]}},
    }
    for name, data in files.items():
        (root / name).write_text(json.dumps(data))
    (root / "videos" / "s13-d21.avi").write_bytes(b"x")
    return root


# ----------------------------------------------------------------------------- registry and folder

def test_registry_lists_every_dataset():
    assert list(DATASETS) == ["tgif", "msvd-qa", "msrvtt-qa", "activitynet-qa", "how2qa",
                              "activitynet-captions", "tacos", "demo", "folder"]
    for name, cls in DATASETS.items():
        assert cls.name == name and get_dataset(name) is cls
    with pytest.raises(KeyError, match="registered datasets: activitynet-captions"):
        get_dataset("nope")


def test_missing_root_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="--root"):
        get_dataset("tgif")(tmp_path / "absent")


def test_folder_lists_videos_recursively_without_collisions(tmp_path):
    for rel in ("a/x.mp4", "b/x.MKV", "c/d/clip.gif", "top.webm", ".hidden.mp4", ".cache/z.mp4", "notes.txt"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"x")
    adapter = get_dataset("folder")(tmp_path)
    refs = adapter.videos()
    assert [r.video_id for r in refs] == ["a/x", "b/x", "c/d/clip", "top"]
    assert refs[1] == VideoRef("b/x", (tmp_path / "b/x.MKV").resolve())
    assert adapter.missing_videos() == [] and adapter.splits() == ()
    with pytest.raises(TypeError):
        adapter.records("train")
    (tmp_path / "a/x.avi").write_bytes(b"x")
    with pytest.raises(DatasetFormatError, match="a/x.avi"):
        get_dataset("folder")(tmp_path).videos()


def test_folder_follows_symlinks_placed_in_the_root_without_looping(tmp_path):
    outside = tmp_path / "disk2"
    (outside / "clips").mkdir(parents=True)
    (outside / "clips" / "c.mp4").write_bytes(b"x")
    (tmp_path / "outside.mp4").write_bytes(b"x")
    root = tmp_path / "root"
    (root / "sub").mkdir(parents=True)
    (root / "sub" / "a.mp4").write_bytes(b"x")
    os.symlink(tmp_path / "outside.mp4", root / "link.mp4")  # a file link the user placed
    os.symlink(outside, root / "gifs")  # a linked directory (cluster layout)
    os.symlink(root, root / "sub" / "loop")  # a link back to an ancestor must not loop
    refs = get_dataset("folder")(root).videos()
    assert [r.video_id for r in refs] == ["gifs/clips/c", "link", "sub/a"]
    assert refs[0].path == root / "gifs" / "clips" / "c.mp4"  # the path as written, link not resolved
    assert refs[0].path.read_bytes() == b"x"


def test_folder_refuses_a_file_name_that_is_not_utf8(tmp_path):
    os.makedirs(tmp_path / "v")
    (tmp_path / "v" / "ok.mp4").write_bytes(b"x")
    with open(os.path.join(os.fsencode(tmp_path / "v"), b"bad\xff.mp4"), "wb") as fh:
        fh.write(b"x")
    with pytest.raises(DatasetFormatError, match=r"v/bad\\xff.mp4.*not valid UTF-8.*rename"):
        get_dataset("folder")(tmp_path).videos()


def test_ids_escaping_the_root_are_refused_as_written_and_links_inside_are_followed(tmp_path):
    from pipelines.paths import resolve_under

    root = tmp_path / "root"
    root.mkdir()
    os.symlink(tmp_path, root / "up")
    assert resolve_under(root, "up/x.mp4") == root / "up" / "x.mp4"
    assert resolve_under(root, "a/../b.mp4") == root / "b.mp4"
    for bad in ("../x.mp4", "a/../../x.mp4", "/etc/passwd"):
        with pytest.raises(UnsafePathError, match="f.csv line 3"):
            resolve_under(root, bad, source="f.csv line 3")


# ----------------------------------------------------------------------------- TGIF-QA

def test_tgif_tasks_records_and_splits(tmp_path):
    root = write_tgif(tmp_path / "tgif")
    action = get_dataset("tgif")(root, task="action")
    assert action.splits() == ("train", "val", "test") and action.task_type == "mc"
    train, val, test = action.records("train"), action.records("val"), action.records("test")
    assert len(train) == 18 and len(val) == 2 and len(test) == 4
    held = tgif_val_rows(20)
    assert held.tolist() == sorted(np.random.default_rng(0).permutation(20)[:2].tolist())
    assert {r.qid for r in val} == {f"action-{100 + i}" for i in held}
    first = test[0]
    assert first == QARecord("action-100", "tumblr_test_0", "what does the man do 0 times",
                             0, ("nod", "wave", "jump", "run", "sit"), "action", "mc")
    count = get_dataset("tgif")(root, task="count")
    assert count.task_type == "count" and count.records("test")[3].answer == 4
    frameqa = get_dataset("tgif")(root, task="frameqa")
    recs = frameqa.records("test")
    assert frameqa.task_type == "open"
    assert [r.qtype for r in recs] == ["object", "number", "color", "location"]
    assert [r.answer for r in recs] == ["red", "blue", "red", "blue"] and recs[0].candidates is None


def test_tgif_videos_and_missing(tmp_path):
    root = write_tgif(tmp_path / "tgif")
    adapter = get_dataset("tgif")(root)  # no task: videos of every task, no records
    ids = [v.video_id for v in adapter.videos()]
    assert ids == sorted([f"tumblr_train_{i}" for i in range(7)] + [f"tumblr_test_{i}" for i in range(4)])
    assert adapter.videos()[0].path == (root / "gifs" / "tumblr_test_0.gif").resolve()
    missing = adapter.missing_videos()
    assert [m.video_id for m in missing] == ["tumblr_train_6"]
    assert missing[0].annotation_file.name == "Train_action_question.csv" and missing[0].location == "line 8"
    assert missing[0].num_rows == 4 * 2  # rows 6 and 13 of each of the four tasks
    with pytest.raises(DatasetFormatError, match="needs a task|need a task"):
        adapter.records("train")


def test_tgif_only_some_tasks_present(tmp_path):
    root = write_tgif(tmp_path / "tgif", tasks=("frameqa",))
    assert get_dataset("tgif")(root).annotation_files()[0].name == "Train_frameqa_question.csv"
    with pytest.raises(DatasetFormatError, match="Train_count_question.csv: file not found"):
        get_dataset("tgif")(root, task="count").records("train")
    with pytest.raises(DatasetFormatError, match="no annotation file"):
        get_dataset("tgif")(tmp_path).videos()


def test_tgif_unknown_task(tmp_path):
    with pytest.raises(DatasetFormatError, match="unknown task 'frame'.*action, transition, count, frameqa"):
        get_dataset("tgif")(tmp_path, task="frame")
    with pytest.raises(DatasetFormatError, match="has no tasks"):
        get_dataset("msvd-qa")(tmp_path, task="frameqa")


def _corrupt_tgif(root: Path, name: str, line: int, new: str | None) -> None:
    path = root / "dataset" / name
    lines = path.read_text().split("\n")
    lines[line - 1] = new if new is not None else lines[line - 1]
    path.write_text("\n".join(lines))


@pytest.mark.parametrize(
    ("task", "line", "new", "message"),
    [
        ("action", 3, "tumblr_train_1\twhat\tnod\twave\tjump", r"Train_action_question.csv: line 3: 5 TAB"),
        ("action", 1, "gif_name\tquestion\ta1\ta2\ta3\ta4\ta5\tvid_id\tkey",
         r"Train_action_question.csv: line 1: header lacks column\(s\) answer"),
        ("transition", 4, "tumblr_train_2\twhat\tnod\twave\tjump\trun\tsit\t5\tgif_2\t102",
         r"Train_transition_question.csv: line 4: answer index 5 out of range 0..4"),
        ("count", 5, "tumblr_train_3\thow many\tthree\tgif_3\t203",
         r"Train_count_question.csv: line 5: field 'answer' must be an integer"),
        ("frameqa", 2, "tumblr_train_0\twhat color\tred\t7\tgif_0\t300\tdesc",
         r"Train_frameqa_question.csv: line 2: FrameQA type '7'"),
    ],
)
def test_tgif_bad_rows_name_file_and_line(tmp_path, task, line, new, message):
    root = write_tgif(tmp_path / "tgif", tasks=(task,))
    _corrupt_tgif(root, f"Train_{task}_question.csv", line, new)
    adapter = get_dataset("tgif")(root, task=task)
    with pytest.raises(DatasetFormatError, match=message) as info:
        adapter.records("train")
    assert "expected a TAB-separated file with the header row" in str(info.value)


def test_tgif_tolerates_missing_trailing_unused_fields(tmp_path):
    root = write_tgif(tmp_path / "tgif", tasks=("frameqa",))
    _corrupt_tgif(root, "Test_frameqa_question.csv", 2, "tumblr_test_0\twhat color?\tred\t2\tgif_0\t300")
    record = get_dataset("tgif")(root, task="frameqa").records("test")[0]
    assert (record.question, record.answer, record.qtype) == ("what color?", "red", "color")


def test_tgif_escaping_gif_name_refused_with_file_and_line(tmp_path):
    root = write_tgif(tmp_path / "tgif", tasks=("count",))
    _corrupt_tgif(root, "Test_count_question.csv", 3, "../../../etc/passwd\thow many\t2\tgif_1\t9")
    with pytest.raises(UnsafePathError, match=r"Test_count_question.csv line 3"):
        get_dataset("tgif")(root, task="count").videos()


def test_tgif_absolute_gif_name_names_the_file_and_line(tmp_path):
    root = write_tgif(tmp_path / "tgif", tasks=("count",))
    _corrupt_tgif(root, "Test_count_question.csv", 4, "/data/tumblr_x\thow many\t2\tgif_1\t9")
    with pytest.raises(UnsafePathError, match=r"'/data/tumblr_x' \(from .*Test_count_question.csv line 4\) "
                       r"is an absolute path"):
        get_dataset("tgif")(root, task="count").records("test")


def test_a_byte_that_is_not_utf8_names_the_line(tmp_path):
    root = write_tgif(tmp_path / "tgif", tasks=("count",))
    path = root / "dataset" / "Train_count_question.csv"
    lines = path.read_bytes().split(b"\n")
    lines[4] = lines[4].replace(b"cat", b"c\xe9t")  # Latin-1, not UTF-8
    path.write_bytes(b"\n".join(lines))
    with pytest.raises(DatasetFormatError, match=r"Train_count_question.csv line 5 column \d+: byte 0xe9 "
                       r"is not valid UTF-8; save the file as UTF-8"):
        get_dataset("tgif")(root, task="count").records("train")


def test_a_symlinked_video_directory_is_used_as_written(tmp_path):
    root = write_tgif(tmp_path / "tgif", tasks=("count",))
    before = get_dataset("tgif")(root, task="count").records("train")
    elsewhere = tmp_path / "scratch" / "gifs"
    elsewhere.parent.mkdir()
    (root / "gifs").rename(elsewhere)
    os.symlink(elsewhere, root / "gifs")  # a common cluster layout
    adapter = get_dataset("tgif")(root, task="count")
    assert adapter.records("train") == before
    refs = {r.video_id: r.path for r in adapter.videos()}
    assert refs["tumblr_train_0"] == root / "gifs" / "tumblr_train_0.gif"  # not resolved
    assert "tumblr_train_6" in [m.video_id for m in adapter.missing_videos()]  # really absent
    assert "tumblr_train_0" not in [m.video_id for m in adapter.missing_videos()]  # found via the link


def test_tgif_empty_split(tmp_path):
    root = write_tgif(tmp_path / "tgif", tasks=("count",))
    (root / "dataset" / "Test_count_question.csv").write_text(TGIF_HEADERS["count"] + "\n")
    adapter = get_dataset("tgif")(root, task="count")
    with pytest.raises(DatasetFormatError, match="split 'test' is empty"):
        adapter.records("test")
    with pytest.raises(KeyError, match="train, val, test"):
        adapter.records("dev")


def test_tgif_val_rows_is_deterministic_and_bounded():
    assert tgif_val_rows(1).size == 0 and tgif_val_rows(2).size == 1 and tgif_val_rows(1000).size == 100
    assert np.array_equal(tgif_val_rows(50), tgif_val_rows(50))


def test_demo_reads_tgif_part_of_demo_root(tmp_path):
    write_tgif(tmp_path / "tgif", tasks=("frameqa",))
    (tmp_path / "DEMO.json").write_text("{}")
    demo = get_dataset("demo")(tmp_path, task="frameqa")
    assert demo.root == tmp_path / "tgif" and len(demo.records("test")) == 4
    # without DEMO.json the root is the TGIF-layout folder itself
    assert len(get_dataset("demo")(tmp_path / "tgif", task="frameqa").records("test")) == 4


# ----------------------------------------------------------------------------- MSVD-QA / MSRVTT-QA

def test_msvd_qa(tmp_path):
    adapter = get_dataset("msvd-qa")(write_msqa(tmp_path / "msvd", msvd=True))
    train = adapter.records("train")
    assert train[0] == QARecord("0", "-4wsuPCjDBc_5_15", "what is a woman cracking into a bowl?", "egg", None,
                                "what", "open")
    assert [r.qtype for r in train] == ["what", "who", "how", "other"]
    assert adapter.records("val")[0].qtype == "where" and adapter.records("test")[0].qtype == "when"
    assert adapter.default_answer_vocab_size == 1000
    videos = adapter.videos()
    assert [v.video_id for v in videos] == ["-4wsuPCjDBc_5_15", "-7KMZQEsJW4_205_208", "-8y1Q0rA3n8_108_115",
                                            "zzz_1_2"]
    assert videos[0].path == (tmp_path / "msvd/YouTubeClips/-4wsuPCjDBc_5_15.avi").resolve()
    assert [(m.video_id, m.location) for m in adapter.missing_videos()] == [("zzz_1_2", "record 1")]


def test_msvd_qa_unmapped_video_id(tmp_path):
    root = write_msqa(tmp_path / "msvd", msvd=True)
    (root / "youtube_mapping.txt").write_text("-4wsuPCjDBc_5_15 vid1\n")
    with pytest.raises(DatasetFormatError, match=r"train_qa.json: record 1: video_id 2 \(vid2\) is not in"):
        get_dataset("msvd-qa")(root).records("train")
    (root / "youtube_mapping.txt").write_text("-4wsuPCjDBc_5_15 vid1\nbroken-line\n")
    with pytest.raises(DatasetFormatError, match=r"youtube_mapping.txt: line 2"):
        get_dataset("msvd-qa")(root).records("train")


def test_msrvtt_qa_layouts(tmp_path):
    root = write_msqa(tmp_path / "msrvtt", msvd=False)
    adapter = get_dataset("msrvtt-qa")(root)
    assert adapter.default_answer_vocab_size == 4000
    assert [v.video_id for v in adapter.videos()] == ["video1", "video2", "video3", "video4"]
    assert adapter.videos()[0].path == (root / "video/video1.mp4").resolve()
    assert len(adapter.missing_videos()) == 4
    # older release layout
    (root / "TrainValVideo").mkdir()
    (root / "TestVideo").mkdir()
    (root / "TrainValVideo/video1.mp4").write_bytes(b"x")
    (root / "TestVideo/video4.mp4").write_bytes(b"x")
    adapter = get_dataset("msrvtt-qa")(root)
    paths = {v.video_id: v.path for v in adapter.videos()}
    assert paths["video1"] == (root / "TrainValVideo/video1.mp4").resolve()
    assert paths["video4"] == (root / "TestVideo/video4.mp4").resolve()
    assert [m.video_id for m in adapter.missing_videos()] == ["video2", "video3"]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('[{"question": "what?", "answer": "x", "video_id": 1},\n {"question": "who?"', r"line 2 column \d+"),
        ('{"question": "what?"}', "top level is dict, not a list"),
        ('[{"question": "what?", "answer": "x", "video_id": 1}, {"question": "who?", "video_id": 2}]',
         r"record 1: missing field\(s\) answer"),
        ('[{"question": "", "answer": "x", "video_id": 1}]',
         r"record 0: field 'question' must be a non-empty"),
        ('[{"question": "q", "answer": "x", "video_id": "abc"}]',
         r"record 0: video_id 'abc' is not an integer"),
    ],
)
def test_msqa_bad_json(tmp_path, content, message):
    root = write_msqa(tmp_path / "msrvtt", msvd=False)
    (root / "val_qa.json").write_text(content)
    with pytest.raises(DatasetFormatError, match="val_qa.json: " + message) as info:
        get_dataset("msrvtt-qa")(root).records("train")  # every split is parsed before anything is returned
    assert "expected a JSON list of objects" in str(info.value)


# ----------------------------------------------------------------------------- ActivityNet-QA

def test_activitynet_qa(tmp_path):
    root = write_anetqa(tmp_path / "anetqa")
    adapter = get_dataset("activitynet-qa")(root)
    train = adapter.records("train")
    assert train[0] == QARecord("v_Ld8qCl0TgQU_train_0", "v_Ld8qCl0TgQU", "what is the man doing", "dancing",
                                None, "motion", "open")
    assert [r.qtype for r in train] == ["motion", "yes_no", "color"]
    assert train[2].video_id == "v_2K1T6wbhhHI"
    assert adapter.records("test")[0].qtype == "number"
    videos = {v.video_id: v.path for v in adapter.videos()}
    assert videos == {"v_Ld8qCl0TgQU": (root / "videos/v_Ld8qCl0TgQU.mp4").resolve(),
                      "v_2K1T6wbhhHI": (root / "videos/v_2K1T6wbhhHI.mkv").resolve(),
                      "v_abcdefghijk": (root / "videos/v_abcdefghijk.mp4").resolve()}
    assert [m.video_id for m in adapter.missing_videos()] == ["v_abcdefghijk"]


def test_activitynet_qa_bad_input(tmp_path):
    root = write_anetqa(tmp_path / "anetqa")
    answers = json.loads((root / "val_a.json").read_text())
    answers[0]["type"] = 9
    (root / "val_a.json").write_text(json.dumps(answers))
    with pytest.raises(DatasetFormatError, match=r"val_a.json: record 0: type 9 is not an integer 0..8"):
        get_dataset("activitynet-qa")(root).videos()
    (root / "val_a.json").write_text("[]")
    with pytest.raises(DatasetFormatError, match=r"val_q.json: record 0: question_id .* has no answer"):
        get_dataset("activitynet-qa")(root).videos()
    (root / "val_a.json").unlink()
    with pytest.raises(DatasetFormatError, match=r"val_a.json: file not found"):
        get_dataset("activitynet-qa")(root).videos()


# ----------------------------------------------------------------------------- How2QA

def test_how2qa(tmp_path):
    root = write_how2qa(tmp_path / "how2qa")
    adapter = get_dataset("how2qa")(root)
    assert adapter.task_type == "mc"
    train = adapter.records("train")
    assert train[1] == QARecord("train-q1", "HXjq-P4dHHs_1", "why does the man pick up the knife 1?", 1,
                                ("to cut bread", "to cook", "to clean it", "to sell"), "how2qa", "mc",
                                (1.5, 11.0))
    assert [v.video_id for v in adapter.videos()] == ["HXjq-P4dHHs_0", "HXjq-P4dHHs_1", "HXjq-P4dHHs_2"]
    assert [m.video_id for m in adapter.missing_videos()] == ["HXjq-P4dHHs_1", "HXjq-P4dHHs_2"]


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ('{"vid_name": "x", "ts": "1-2", "q": "why?", "a0": "a", "a1": "b", "a2": "c", "a3": "d", '
         '"answer_idx": 4}', "line 2: answer_idx 4 out of range 0..3"),
        ('{"vid_name": "x", "ts": "1-2", "q": "why?", "a0": "a", "a1": "b", "a2": "c", "answer_idx": 0}',
         r"line 2: missing field\(s\) a3"),
        ('{"vid_name": "x", "ts": "1-2", "q": "why?"', "line 2: invalid JSON"),
        ('{"vid_name": "x", "ts": "5-2", "q": "why?", "a0": "a", "a1": "b", "a2": "c", "a3": "d", '
         '"answer_idx": 0}', "line 2: ts '5-2' is not an interval"),
    ],
)
def test_how2qa_bad_lines(tmp_path, bad, message):
    root = write_how2qa(tmp_path / "how2qa")
    path = root / "how2qa_val.jsonl"
    path.write_text(path.read_text().splitlines()[0] + "\n" + bad + "\n")
    with pytest.raises(DatasetFormatError, match="how2qa_val.jsonl: " + message):
        get_dataset("how2qa")(root).records("val")


def test_how2qa_subtitles_of_the_segment(tmp_path):
    root = write_how2qa(tmp_path / "how2qa")
    assert get_dataset("how2qa")(root).records("train")[0].subtitle is None  # no subtitle file
    before = get_dataset("how2qa")(root).fingerprint()
    lines = [  # HERO / VALUE how2_subtitles.jsonl: one line per video, entries in time order
        {"vid_name": "HXjq-P4dHHs_0", "sub": [{"text": "take the knife", "start": 0.0, "end": 2.0},
                                              {"text": "cut the bread", "start": 2.5, "end": 6.0},
                                              {"text": "it&#39;s done", "start": 10.5, "end": 12.0}]},
        {"vid_name": "HXjq-P4dHHs_1", "sub": []},
        {"vid_name": "other_video", "sub": [{"text": "unused", "start": 0, "end": 1}]},
    ]
    (root / "how2_subtitles.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    adapter = get_dataset("how2qa")(root)
    train = adapter.records("train")
    assert train[0].segment == (0.5, 10.0) and train[0].subtitle == "take the knife cut the bread"
    assert train[1].subtitle == "" and train[2].subtitle == ""  # no entries / no line for the video
    assert adapter.fingerprint() != before  # the text caches are rebuilt when the subtitles change
    assert root / "how2_subtitles.jsonl" in adapter.annotation_files()


@pytest.mark.parametrize(("bad", "message"), [
    ('{"vid_name": "v", "sub": [{"text": "a", "start": 3, "end": 1}]}',
     r"line 1: sub\[0\]: end 1.0 is before"),
    ('{"vid_name": "v", "sub": [{"text": "a", "start": 3}]}', r"line 1: sub\[0\]: missing field\(s\) end"),
    ('{"vid_name": "v", "sub": "hello"}', "line 1: 'sub' must be a list"),
    ('{"vid_name": "v"', "line 1: invalid JSON"),
])
def test_how2qa_bad_subtitle_lines(tmp_path, bad, message):
    root = write_how2qa(tmp_path / "how2qa")
    (root / "subtitles.jsonl").write_text(bad + "\n")
    with pytest.raises(DatasetFormatError, match="subtitles.jsonl: " + message):
        get_dataset("how2qa")(root).records("train")


# ----------------------------------------------------------------------------- moment retrieval

def test_activitynet_captions(tmp_path):
    root = write_captions(tmp_path / "captions")
    adapter = get_dataset("activitynet-captions")(root)
    assert adapter.splits() == ("train", "val", "test") and adapter.kind == "moment"
    train = adapter.moments("train")
    assert train == [
        MomentRecord("train:v_QOlSCBRmfWY#0", "v_QOlSCBRmfWY", "A young woman is seen standing.", 0.83, 19.86,
                     82.73),
        MomentRecord("train:v_QOlSCBRmfWY#1", "v_QOlSCBRmfWY", "She then begins dancing.", 17.37, 60.81,
                     82.73),
    ]
    assert adapter.moments("val")[0].end_s == 55.15  # clipped to the duration; val = val_1.json
    assert adapter.moments("test")[0].video_id == "v_bXdq2zI1Ms0"  # test = val_2.json
    assert adapter.videos()[0] == VideoRef("v_QOlSCBRmfWY", (root / "videos/v_QOlSCBRmfWY.webm").resolve())
    assert {m.video_id for m in adapter.missing_videos()} == {"v_uqiMw7tQ1Cc", "v_bXdq2zI1Ms0"}
    with pytest.raises(TypeError, match="use moments"):
        adapter.records("train")


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({"duration": 10.0, "timestamps": [[5.0, 2.0]], "sentences": ["x"]},
         "timestamp 0: start 5.0 > end 2.0"),
        ({"duration": 10.0, "timestamps": [[1.0, 2.0]], "sentences": ["x", "y"]}, "equal length"),
        ({"timestamps": [[1.0, 2.0]], "sentences": ["x"]}, "missing field 'duration'"),
        ({"duration": 10.0, "timestamps": [[1.0]], "sentences": ["x"]}, r"timestamp 0: \[1.0\] is not"),
    ],
)
def test_activitynet_captions_bad_entries(tmp_path, entry, message):
    root = write_captions(tmp_path / "captions")
    (root / "val_2.json").write_text(json.dumps({"v_bXdq2zI1Ms0": entry}))
    with pytest.raises(DatasetFormatError, match=r"val_2.json: record 'v_bXdq2zI1Ms0'.*" + message):
        get_dataset("activitynet-captions")(root).moments("train")


def test_tacos_frames_to_seconds(tmp_path):
    root = write_tacos(tmp_path / "tacos")
    adapter = get_dataset("tacos")(root)
    train = adapter.moments("train")
    assert [(m.qid, m.start_s, m.end_s, m.duration_s) for m in train] == [
        ("train:s13-d21#0", 0.0, 10.0, 100.0), ("train:s13-d21#1", 5.0, 30.0, 100.0)]
    val = adapter.moments("val")[0]
    assert val.start_s == pytest.approx(10.0) and val.end_s == pytest.approx(20.0)
    assert adapter.moments("test")[0].end_s == pytest.approx(24.0)  # 700 frames clipped to 600 / 25 fps
    assert adapter.videos()[0] == VideoRef("s13-d21", (root / "videos/s13-d21.avi").resolve())
    missing = adapter.missing_videos()
    assert [(m.video_id, m.expected_path.name) for m in missing] == [("s14-d26", "s14-d26.avi"),
                                                                     ("s15-d21", "s15-d21.avi")]
    (root / "test.json").write_text(json.dumps({"s15-d21.avi": {"num_frames": 600, "timestamps": [[0, 1]],
                                                                "sentences": ["x"]}}))
    with pytest.raises(DatasetFormatError, match=r"test.json: record 's15-d21.avi': missing field 'fps'"):
        get_dataset("tacos")(root).moments("test")
    escaping = {"../../x.avi": {"num_frames": 600, "fps": 25, "timestamps": [], "sentences": []}}
    (root / "test.json").write_text(json.dumps(escaping))
    with pytest.raises(UnsafePathError, match=r"test.json record '../../x.avi'"):
        get_dataset("tacos")(root).videos()


def test_fingerprint_follows_annotation_content(tmp_path):
    root = write_tacos(tmp_path / "tacos")
    before = get_dataset("tacos")(root).fingerprint()
    assert get_dataset("tacos")(root).fingerprint() == before
    (root / "val.json").write_text((root / "val.json").read_text().replace("carrot", "potato"))
    assert get_dataset("tacos")(root).fingerprint() != before


# ----------------------------------------------------------------------------- lazy video paths

LAZY = {"how2qa": (write_how2qa, "records"), "activitynet-qa": (write_anetqa, "records"),
        "activitynet-captions": (write_captions, "moments"), "tacos": (write_tacos, "moments")}


@pytest.mark.parametrize("name", sorted(LAZY))
def test_reading_annotations_never_lists_the_videos_directory(tmp_path, monkeypatch, name):
    write, method = LAZY[name]
    root = write(tmp_path / name)
    want = {s: getattr(get_dataset(name)(root), method)(s) for s in get_dataset(name)(root).splits()}

    def unreadable(path):
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr("pipelines.datasets.base.os.listdir", unreadable)
    adapter = get_dataset(name)(root)  # vqa-train reads records only: the videos directory is unreadable
    assert {s: getattr(adapter, method)(s) for s in adapter.splits()} == want
    with pytest.raises(DatasetFormatError, match=r"videos: cannot list the videos directory"):
        adapter.videos()  # enumerating videos (extraction, answering) does list it
    monkeypatch.undo()
    import shutil

    shutil.rmtree(root / "videos")  # absent
    adapter = get_dataset(name)(root)
    assert {s: getattr(adapter, method)(s) for s in adapter.splits()} == want
    assert len(adapter.missing_videos()) == len(adapter.videos())


def test_msrvtt_legacy_layout_is_looked_up_only_when_videos_are_listed(tmp_path, monkeypatch):
    root = write_msqa(tmp_path / "msrvtt", msvd=False)
    (root / "TrainValVideo").mkdir()
    (root / "TrainValVideo/video1.mp4").write_bytes(b"x")
    looked: list[str] = []
    real = Path.is_file
    monkeypatch.setattr(Path, "is_file", lambda self: looked.append(str(self)) or real(self))
    adapter = get_dataset("msrvtt-qa")(root)
    adapter.records("train")
    assert not [p for p in looked if "Video" in p]
    assert adapter.videos()[0].path == (root / "TrainValVideo/video1.mp4").resolve()


def test_lazy_paths_keep_the_id_checks_extensions_and_links(tmp_path):
    root = write_how2qa(tmp_path / "how2qa")
    (root / "videos" / "HXjq-P4dHHs_1.webm").write_bytes(b"x")
    elsewhere = tmp_path / "disk2"
    (root / "videos").rename(elsewhere)
    os.symlink(elsewhere, root / "videos")  # a link the user placed inside the root is followed
    paths = {v.video_id: v.path for v in get_dataset("how2qa")(root).videos()}
    assert paths["HXjq-P4dHHs_0"] == root / "videos" / "HXjq-P4dHHs_0.mp4"  # as written, found via the link
    assert paths["HXjq-P4dHHs_1"] == root / "videos" / "HXjq-P4dHHs_1.webm"  # mixed extensions
    assert paths["HXjq-P4dHHs_1"].is_file()
    path = root / "how2qa_val.jsonl"
    first = path.read_text().splitlines()[0]
    for bad in ("../../outside", "/etc/passwd"):
        path.write_text(first + "\n" + first.replace("HXjq-P4dHHs_0", bad).replace("val-q0", "x") + "\n")
        with pytest.raises(UnsafePathError, match=r"how2qa_val.jsonl line 2"):
            get_dataset("how2qa")(root).records("train")  # at reading time, before any path is needed


def test_moments_wholly_outside_their_video_are_dropped_by_name_and_counted(tmp_path, caplog):
    root = write_captions(tmp_path / "captions")
    (root / "val_2.json").write_text(json.dumps({"v_bXdq2zI1Ms0": {
        "duration": 33.6,
        "timestamps": [[40.0, 50.0], [3.0, 9.0], [-8.0, -2.0], [30.0, 36.0], [33.6, 35.0]],
        "sentences": ["after the end", "inside", "before the start", "runs past the end",
                      "starts at the end"],
    }}))
    with caplog.at_level("WARNING"):
        test = get_dataset("activitynet-captions")(root).moments("test")
    # kept: the moments with something inside [0, 33.6] (the one running past the end is clipped)
    assert [(m.qid, m.query, m.start_s, m.end_s) for m in test] == [
        ("test:v_bXdq2zI1Ms0#1", "inside", 3.0, 9.0),
        ("test:v_bXdq2zI1Ms0#3", "runs past the end", 30.0, 33.6)]
    dropped = [r.getMessage() for r in caplog.records if "wholly outside" in r.getMessage()]
    assert len(dropped) == 1 and "val_2.json: dropped 3 moment(s) wholly outside their video" in dropped[0]
    assert "record 'v_bXdq2zI1Ms0' timestamp 0: [40, 50] s on a 33.6 s video" in dropped[0]
    assert "timestamp 2: [-8, -2] s" in dropped[0]
    assert any("1 moment(s) reach outside [0, duration]; clipped" in r.getMessage() for r in caplog.records)
