"""Text pipeline: tokenizer, vocabularies, OOV answers, candidates, cache and its invalidation."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest

from pipelines import text as text_module
from pipelines.datasets import DatasetFormatError, get_dataset
from pipelines.text import PAD, UNK, build_answer_vocab, encode_tokens, prepare_moments, prepare_qa, tokenize


def write_msrvtt(root: Path, test_answers=("dog", "zebra")) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    data = {
        "train": [("what is the dog doing?", "running"), ("what is running?", "dog"), ("who runs?", "dog"),
                  ("what color is the dog", "Brown "), ("how many dogs run?", "two")],
        "val": [("where is the cat sleeping?", "bed")],
        "test": [("what is the animal?", test_answers[0]), ("what animal is it?", test_answers[1])],
    }
    qid = 0
    for split, items in data.items():
        rows = []
        for q, a in items:
            rows.append({"answer": a, "id": qid, "question": q, "video_id": qid % 3})
            qid += 1
        (root / f"{split}_qa.json").write_text(json.dumps(rows))
    return root


def write_tgif_task(root: Path, task: str) -> Path:
    (root / "dataset").mkdir(parents=True, exist_ok=True)
    if task == "action":
        header = "gif_name\tquestion\ta1\ta2\ta3\ta4\ta5\tanswer\tvid_id\tkey"
        row = ("g{i}\twhat does the man do {i} times?\tnod head\twave\tjump up high\trun\tsit\t{a}"
               "\tgif_{i}\t{i}")
    else:
        header = "gif_name\tquestion\tanswer\tvid_id\tkey"
        row = "g{i}\thow many times does the cat jump?\t{a}\tgif_{i}\t{i}"
    for split, n in (("Train", 20), ("Test", 3)):
        rows = [row.format(i=i, a=i % 5 if task == "action" else i % 4 + 1) for i in range(n)]
        (root / "dataset" / f"{split}_{task}_question.csv").write_text(header + "\n" + "\n".join(rows) + "\n")
    return root


def test_tokenize_lowercases_and_splits_punctuation():
    assert tokenize("What's on the TABLE?") == ["what", "'s", "on", "the", "table", "?"]
    assert tokenize("a man,  (slowly) walks.") == ["a", "man", ",", "(", "slowly", ")", "walks", "."]
    assert tokenize("") == []


def test_answer_vocab_ranking_and_encoding():
    assert build_answer_vocab(["b", "a", "b", "c", "a", "d"], 2) == ["a", "b"]
    assert build_answer_vocab(["b", "a", "b"], None) == ["b", "a"]
    index = {PAD: 0, UNK: 1, "x": 2, "y": 3}
    ids, lengths = encode_tokens([["x", "y"], [], ["y", "q", "x"]], index, max_len=2)
    assert ids.tolist() == [[2, 3], [1, 0], [3, 1]] and lengths.tolist() == [2, 1, 2]


def test_prepare_qa_open_ended_vocab_oov_and_cache(tmp_path, caplog):
    root = write_msrvtt(tmp_path / "msrvtt")
    adapter = get_dataset("msrvtt-qa")(root)
    with caplog.at_level(logging.INFO):
        prep = prepare_qa(adapter, cache_dir=tmp_path / "cache", answer_vocab_size=2)
    assert "no GloVe file given" in caplog.text and prep.embeddings is None
    assert prep.task_type == "open" and list(prep.splits) == ["train", "val", "test"]
    # question vocabulary from train only, most frequent first
    assert prep.question_vocab[:7] == [PAD, UNK, "?", "is", "what", "dog", "the"]
    assert "cat" not in prep.question_vocab and "running" in prep.question_vocab
    # answer vocab: top 2 training answers after strip/lower; ties alphabetical
    assert prep.answer_vocab == ["dog", "brown"]
    train = prep.splits["train"]
    assert train.answers.tolist() == [-1, 0, 0, 1, -1] and train.answers.dtype == np.int64
    assert train.answer_text[3] == "brown"
    test = prep.splits["test"]
    assert test.answers.tolist() == [0, -1]  # "zebra" is out of vocabulary: -1, never a real class
    assert "test: 1/2 answers outside the 2-answer vocabulary" in caplog.text
    val = prep.splits["val"]
    index = {w: i for i, w in enumerate(prep.question_vocab)}
    expected = [1, index["is"], index["the"], 1, 1, index["?"]]  # where, cat, sleeping: not in train
    assert val.questions.tolist() == [expected] and val.question_len.tolist() == [6]
    assert train.questions.shape == (5, 6) and train.questions[2].tolist()[3:] == [0, 0, 0]
    assert train.qtypes == ["what", "what", "who", "what", "how"] and val.qtypes == ["where"]
    assert train.candidates is None and train.qids == ["0", "1", "2", "3", "4"]
    assert train.video_ids == ["video0", "video1", "video2", "video0", "video1"]

    # second call: served from the cache without parsing again
    def boom(split):
        raise AssertionError("annotations parsed again")

    cached_adapter = get_dataset("msrvtt-qa")(root)
    cached_adapter.records = boom
    again = prepare_qa(cached_adapter, cache_dir=tmp_path / "cache", answer_vocab_size=2)
    assert again.cache_key == prep.cache_key and again.answer_vocab == prep.answer_vocab
    assert np.array_equal(again.splits["val"].questions, val.questions)
    assert len(list((tmp_path / "cache").glob("*.npz"))) == 1

    # different vocabulary settings or annotations: rebuilt under a new key
    other = prepare_qa(get_dataset("msrvtt-qa")(root), cache_dir=tmp_path / "cache", answer_vocab_size=None)
    assert other.cache_key != prep.cache_key and other.answer_vocab == ["dog", "brown", "running", "two"]
    write_msrvtt(root, test_answers=("dog", "two"))
    changed = prepare_qa(get_dataset("msrvtt-qa")(root), cache_dir=tmp_path / "cache", answer_vocab_size=2)
    assert changed.cache_key not in (prep.cache_key, other.cache_key)
    assert changed.splits["test"].answers.tolist() == [0, -1]
    assert len(list((tmp_path / "cache").glob("*.json"))) == 3


def test_prepare_qa_default_sizes_and_truncation(tmp_path):
    adapter = get_dataset("msrvtt-qa")(write_msrvtt(tmp_path / "msrvtt"))
    prep = prepare_qa(adapter, cache_dir=tmp_path / "c", max_question_len=3)  # default: top 4000
    assert len(prep.answer_vocab) == 4
    assert prep.splits["train"].questions.shape == (5, 3) and prep.splits["train"].question_len.max() == 3
    with pytest.raises(ValueError, match="answer_vocab_size must be a positive integer"):
        prepare_qa(adapter, cache_dir=tmp_path / "c", answer_vocab_size=0)


def test_prepare_qa_multiple_choice_candidates(tmp_path):
    adapter = get_dataset("tgif")(write_tgif_task(tmp_path / "tgif", "action"), task="action")
    prep = prepare_qa(adapter, cache_dir=tmp_path / "c", answer_vocab_size=None)
    assert prep.task_type == "mc" and prep.answer_vocab == []
    test = prep.splits["test"]
    assert test.candidates.shape == (3, 5, 3) and test.candidates_len.tolist()[0] == [2, 1, 3, 1, 1]
    index = {w: i for i, w in enumerate(prep.question_vocab)}
    assert test.candidates[0, 2].tolist() == [index["jump"], index["up"], index["high"]]
    assert test.candidates[0, 1].tolist() == [index["wave"], 0, 0]
    assert test.answers.tolist() == [0, 1, 2] and test.answer_text == ["nod head", "wave", "jump up high"]
    assert len(prep.splits["train"]) + len(prep.splits["val"]) == 20 and len(prep.splits["val"]) == 2


def test_prepare_qa_subtitles(tmp_path):
    root = tmp_path / "how2qa"
    root.mkdir()
    for split, n in (("train", 3), ("val", 1), ("test", 1)):
        rows = [{"vid_name": f"HXjq-P4dHHs_{i}", "ts": f"{i}.5-{i + 10}.0", "q": "why does he cut it?",
                 "a0": "to eat", "a1": "to cook", "a2": "to clean", "a3": "to sell", "answer_idx": i % 4,
                 "qid": f"{split}-q{i}"} for i in range(n)]
        (root / f"how2qa_{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    sub = [{"vid_name": "HXjq-P4dHHs_0", "sub": [{"text": "Slice the loaf", "start": 1.0, "end": 3.0}]}]
    (root / "how2_subtitles.jsonl").write_text(json.dumps(sub[0]) + "\n")
    adapter = get_dataset("how2qa")(root)
    plain = prepare_qa(adapter, cache_dir=tmp_path / "c")
    assert plain.splits["train"].subtitles is None and "slice" not in plain.question_vocab  # not asked for
    prep = prepare_qa(adapter, cache_dir=tmp_path / "c", subtitles=True)
    index = {w: i for i, w in enumerate(prep.question_vocab)}
    train = prep.splits["train"]
    assert train.subtitles[0].tolist() == [index["slice"], index["the"], index["loaf"]]  # in the vocabulary
    assert train.subtitle_len.tolist() == [3, 0, 0]  # length 0: no subtitle text (not one <unk>)
    assert prep.splits["test"].subtitle_len.tolist() == [3] and prep.cache_key != plain.cache_key
    again = prepare_qa(get_dataset("how2qa")(root), cache_dir=tmp_path / "c", subtitles=True)  # the cache
    np.testing.assert_array_equal(again.splits["train"].subtitles, train.subtitles)
    msrvtt = get_dataset("msrvtt-qa")(write_msrvtt(tmp_path / "msrvtt"))  # no subtitles: as without
    assert prepare_qa(msrvtt, cache_dir=tmp_path / "c", subtitles=True).splits["train"].subtitles is None


def test_prepare_qa_count_answers_are_float(tmp_path):
    adapter = get_dataset("tgif")(write_tgif_task(tmp_path / "tgif", "count"), task="count")
    prep = prepare_qa(adapter, cache_dir=tmp_path / "c", answer_vocab_size=None)
    test = prep.splits["test"]
    assert test.answers.dtype == np.float32 and test.answers.tolist() == [1.0, 2.0, 3.0]
    assert test.candidates is None and test.qtypes == ["count"] * 3


def test_prepare_qa_with_glove(tmp_path):
    adapter = get_dataset("msrvtt-qa")(write_msrvtt(tmp_path / "msrvtt"))
    glove = tmp_path / "glove.txt"
    glove.write_text("the 1 2 3\ndog 4 5 6\nWhat 7 8 9\n")
    prep = prepare_qa(adapter, cache_dir=tmp_path / "c", answer_vocab_size=None, glove=glove)
    index = {w: i for i, w in enumerate(prep.question_vocab)}
    assert prep.embeddings.shape == (len(prep.question_vocab), 3) and prep.embeddings.dtype == np.float32
    assert prep.embeddings[index["dog"]].tolist() == [4, 5, 6]
    assert prep.embeddings[index["what"]].tolist() == [7, 8, 9]  # matched case-insensitively
    assert prep.embeddings[0].tolist() == [0, 0, 0]


def test_prepare_qa_refuses_non_qa_and_taskless(tmp_path):
    root = write_tgif_task(tmp_path / "tgif", "count")
    with pytest.raises(ValueError, match="needs a QA dataset with its task set"):
        prepare_qa(get_dataset("tgif")(root), cache_dir=tmp_path / "c", answer_vocab_size=None)
    header_only = "gif_name\tquestion\tanswer\tvid_id\tkey\n"
    (tmp_path / "tgif" / "dataset" / "Test_count_question.csv").write_text(header_only)
    with pytest.raises(DatasetFormatError, match="split 'test' is empty"):
        prepare_qa(get_dataset("tgif")(root, task="count"), cache_dir=tmp_path / "c", answer_vocab_size=None)
    assert not (tmp_path / "c").exists() or not list((tmp_path / "c").glob("*"))  # nothing half-written


def test_prepare_moments(tmp_path):
    root = tmp_path / "tacos"
    root.mkdir()
    for split, sentence in (("train", "The person cuts the cucumber."), ("val", "He peels it."),
                            ("test", "The person washes a pan.")):
        entry = {"num_frames": 300, "fps": 30.0, "timestamps": [[30, 150]], "sentences": [sentence]}
        (root / f"{split}.json").write_text(json.dumps({f"s1-d{len(split)}.avi": entry}))
    prep = prepare_moments(get_dataset("tacos")(root), cache_dir=tmp_path / "c")
    assert prep.query_vocab[:3] == [PAD, UNK, "the"]
    test = prep.splits["test"]
    index = {w: i for i, w in enumerate(prep.query_vocab)}
    assert test.queries.tolist() == [[index["the"], index["person"], 1, 1, 1, index["."]]]
    assert test.start_s.tolist() == [1.0] and test.end_s.tolist() == [5.0]
    assert test.duration_s.tolist() == [10.0]
    assert test.qids == ["test:s1-d4#0"]
    again = prepare_moments(get_dataset("tacos")(root), cache_dir=tmp_path / "c")
    assert again.cache_key == prep.cache_key
    assert again.splits["test"].query_text == ["The person washes a pan."]


def test_cache_files_are_plain_npz_and_json(tmp_path):
    adapter = get_dataset("msrvtt-qa")(write_msrvtt(tmp_path / "msrvtt"))
    prep = prepare_qa(adapter, cache_dir=tmp_path / "c", answer_vocab_size=3)
    (npz,) = (tmp_path / "c").glob("*.npz")
    assert npz.name == f"msrvtt-qa-text-{prep.cache_key}.npz"
    with np.load(npz, allow_pickle=False) as data:
        assert all(data[k].dtype != object for k in data.files)
    meta = json.loads(npz.with_suffix(".json").read_text())
    assert meta["answer_vocab"] == prep.answer_vocab and meta["cache_key"] == prep.cache_key
    assert text_module.TOKENIZER_VERSION == 1


def test_corrupt_cache_is_rebuilt(tmp_path, caplog):
    adapter = get_dataset("msrvtt-qa")(write_msrvtt(tmp_path / "msrvtt"))
    prep = prepare_qa(adapter, cache_dir=tmp_path / "c", answer_vocab_size=3)
    (npz,) = (tmp_path / "c").glob("*.npz")
    npz.write_bytes(b"not a zip file")
    with caplog.at_level(logging.WARNING):
        again = prepare_qa(get_dataset("msrvtt-qa")(tmp_path / "msrvtt"), cache_dir=tmp_path / "c",
                           answer_vocab_size=3)
    assert "unreadable" in caplog.text
    assert np.array_equal(again.splits["train"].questions, prep.splits["train"].questions)
    with np.load(npz, allow_pickle=False) as data:
        assert "train/questions" in data.files
