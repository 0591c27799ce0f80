"""The task-kind registry (``train.tasks``): every model's task types have a kind, and the kinds answer
the runner's questions as the run's outputs need (batches, vocabularies, prediction files)."""

import csv
import json

import pytest
import torch

from models import MODELS
from train.losses import PredictionRecord
from train.tasks import TASKS, get_task


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
