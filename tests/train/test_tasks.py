"""The task-kind registry (``train.tasks``): every model's task types have a kind, and the kinds answer
the runner's questions as the run's outputs need (batches, vocabularies, prediction files)."""

import csv
import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from models import MODELS
from pipelines.text import EncodedSplit, encode_tokens, tokenize
from train.data import QADataset
from train.losses import PredictionRecord
from train.tasks import TASKS, ItemError, get_task


def test_every_model_task_type_has_a_kind():
    for name, entry in MODELS.items():
        missing = set(entry.task_types) - set(TASKS)
        assert not missing, f"model {name}: task types {missing} have no kind in train.tasks.TASKS"
    assert {k: v.name for k, v in TASKS.items()} == {k: k for k in TASKS}
    with pytest.raises(KeyError, match="unknown task type 'nope'; expected one of open, mc, count, moment"):
        get_task("nope")


def test_kinds_differ_where_the_outputs_do(tmp_path):
    class Prepared:
        question_vocab, answer_vocab, query_vocab = ["<pad>", "a"], ["yes", "no"], ["<pad>", "q"]

    assert get_task("open").vocabularies(Prepared) == (["<pad>", "a"], ["yes", "no"])
    assert get_task("mc").vocabularies(Prepared) == (["<pad>", "a"], None)
    assert get_task("moment").vocabularies(Prepared) == (["<pad>", "q"], None)
    assert [get_task(k).reads_subtitles for k in TASKS] == [True, True, True, False]
    assert [get_task(k).selection for k in TASKS] == [
        ("accuracy", "max"), ("accuracy", "max"), ("mse", "min"), ("R@1,IoU=0.5", "max")]

    class Reader:
        outputs = {}

    items = [{"qid": "q", "video_id": "v", "qtype": "count", "answer_text": "3",
              "question": torch.tensor([1]), "question_len": 1, "answer": 3.0}]
    assert get_task("count").collate(Reader)(items)["answer"].dtype == torch.float32
    assert get_task("mc").collate(Reader)([dict(items[0], answer=1)])["answer"].dtype == torch.int64

    rec = PredictionRecord("q1", "v1", "count", 3, 4, -1, 1.0, raw=3.2)
    get_task("count").write_predictions(tmp_path, "test", [rec])
    assert json.loads((tmp_path / "predictions_test.jsonl").read_text()) == {
        "qid": "q1", "video_id": "v1", "qtype": "count", "prediction": 3, "answer": 4, "raw_prediction": 3.2,
        "squared_error": 1.0}
    with open(tmp_path / "predictions_test.csv", newline="") as fh:
        assert next(csv.reader(fh)) == ["qid", "video_id", "qtype", "prediction", "answer", "raw_prediction",
                                        "squared_error"]
    wrong = PredictionRecord("q1", "v1", "what", "yes", "no", 1, 0.0)
    get_task("open").write_predictions(tmp_path, "val", [wrong])
    assert json.loads((tmp_path / "predictions_val.jsonl").read_text())["correct"] is False


def _meta(vocab, stats):
    return {"question_vocab": vocab, "answer_vocab": ["yes", "no"], "max_question_len": 8, "subtitles": True,
            "feature_stats": {k: {"mean": torch.from_numpy(m), "std": torch.from_numpy(s)}
                              for k, (m, s) in stats.items()}}


def test_a_new_question_is_the_item_training_builds():
    """vqa-answer's item of a training question (``new_item``) is the training dataset's item: the same
    tokens, candidates, subtitle, segment and standardised features (one builder, ``train.data.qa_item``)."""
    vocab = ["<pad>", "<unk>", "what", "is", "the", "man", "doing", "run", "jump", "sit", "he", "says"]
    index = {w: i for i, w in enumerate(vocab)}
    rng = np.random.default_rng(0)
    feats = {"appearance": rng.normal(size=(4, 3)).astype(np.float16),
             "frame_mask": np.array([1, 1, 1, 0], bool)}
    stats = {"appearance": (np.full(3, 0.5, np.float32), np.full(3, 2.0, np.float32))}
    question, cands, sub = "what is the man doing ?", ["run", "jump fast", "sit"], "he says hi"
    q, ql = encode_tokens([tokenize(question)], index, 8)
    c, cl = encode_tokens([tokenize(x) for x in cands], index, 8)
    s, sl = encode_tokens([tokenize(sub)], index, allow_empty=True)
    split = EncodedSplit(["q0"], ["v0"], [""], q, ql, c[None], cl[None], np.array([0]), [""], s, sl)
    trained = QADataset(split, {"v0": feats}, feature_stats=stats, segments={"q0": (1.0, 2.5)})[0]
    kind = get_task("mc")
    view = kind.answer_view(_meta(vocab, stats), source="ckpt", feature_keys=("appearance", "frame_mask"))
    new = kind.new_item(view, feats, "v0", question, candidates=cands, segment=(1.0, 2.5), subtitle=sub)
    assert new.keys() == trained.keys()
    for key, value in trained.items():
        if isinstance(value, torch.Tensor):
            assert torch.equal(new[key], value), key
        elif key not in ("qid", "qtype", "answer_text"):
            assert new[key] == value, key
    assert new["appearance"].dtype == torch.float32 and not new["appearance"][3].any()  # padding stays 0
    with pytest.raises(ItemError, match="give the candidates"):
        kind.new_item(view, feats, "v0", question)
    with pytest.raises(ItemError, match="this is a open model: it takes no candidates"):
        get_task("open").new_item(view, feats, "v0", question, candidates=cands)


def test_no_module_outside_the_kinds_tests_a_task_name():
    """The runner, the loop, the losses, vqa-answer and explain ask the kind (``train.tasks``); a task's
    name is tested only in its kind, in a model's paper defaults per task (``train/recipes/``) and in the
    converters of official files (whose layout the official --task-type names). Reports read a run's task
    through its kind too (``m["task_type"] == ...`` is a test)."""
    root = Path(__file__).resolve().parents[2] / "train"
    allowed = {*(root / "tools" / "convert" / f for f in ("masn.py", "mspan.py"))}
    found = [f"{p.relative_to(root.parent)}:{n}" for p in sorted(root.rglob("*.py"))
             if p.relative_to(root).parts[0] not in ("tasks", "recipes") and p not in allowed
             for n, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1)
             if re.search(r"task_type['\"]?\]?\s*[!=]=\s*['\"]", line)]
    assert not found, f"task names tested outside train/tasks: {found}"
