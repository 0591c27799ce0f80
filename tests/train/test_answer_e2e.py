"""``vqa-answer`` for end-to-end SiaSamRea checkpoints (``model.input=frames``, issue 27): answering the test
questions from the raw videos gives exactly the run's ``predictions_test.jsonl``.

The run is the one of ``tests/train/test_siasamrea_e2e.py`` (random ResNet-18 at 32 px, a tiny local BERT,
the demo's How2QA and ActivityNet-QA layouts), whose fixture and runner this module reuses.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

pytest.importorskip("transformers")

from pipelines.datasets import get_dataset  # noqa: E402
from train.tools.answer import Answerer  # noqa: E402

_spec = importlib.util.spec_from_file_location("siasamrea_e2e_runs", Path(__file__).with_name(
    "test_siasamrea_e2e.py"))
_runs = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_runs)
demo, _train = _runs.demo, _runs._train  # the demo sets, the tiny BERT, the run script; its runner


@pytest.mark.parametrize("dataset", ["how2qa", "activitynet-qa"])
def test_answers_equal_the_runs_test_predictions(demo, tmp_path, dataset):  # noqa: F811
    root = demo / "demo" / dataset
    out = tmp_path / "run"
    _train(demo, dataset, root, out, epochs=1)
    answerer = Answerer.from_checkpoint(out / "checkpoints" / "best.pt")
    assert answerer.frames and answerer.random_weights and "frames" in answerer.describe()
    adapter = get_dataset(dataset)(root)
    paths = {v.video_id: v.path for v in adapter.videos()}
    records = {r.qid: r for r in adapter.records("test")}
    preds = [json.loads(line) for line in (out / "predictions_test.jsonl").read_text().splitlines()]
    assert len(preds) >= 5
    for pred in preds:
        rec = records[pred["qid"]]
        result = answerer.answer(paths[rec.video_id], rec.question, candidates=rec.candidates,
                                 segment=rec.segment, subtitle=rec.subtitle)
        assert result.prediction == pred["prediction"], (rec.qid, result.to_json(), pred)
        assert result.frames is not None and result.frames.shape[-1] == 3  # the clip the model saw
