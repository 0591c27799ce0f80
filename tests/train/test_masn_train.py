"""MASN through ``vqa-train``: learning on each task type and the feature-set check (released weights:
``test_convert_eval.py``)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from train.cli import build_cli

TINY = ["--set", "model.hidden_dim=16", "--set", "model.word_dim=8", "--set", "model.position_dim=4",
        "--set", "model.glimpses=2", "--set", "model.dropout=0.0", "--set", "model.attention_dropout=0.0",
        "--set", "model.freeze_embeddings=false"]


def _args(data, features, task: str, out: Path, *extra: str) -> list[str]:
    return ["masn", "--dataset", "tgif", "--task", task, "--root", str(data.root), "--features",
            str(features), "--out", str(out), "--no-progress", *extra]


@pytest.mark.slow
@pytest.mark.parametrize("task", ["frameqa", "action", "count"])
def test_masn_learns_each_task_type(tiny_tgif, tiny_masn_features, tmp_path, task):
    out = tmp_path / task
    res = CliRunner().invoke(build_cli(), _args(tiny_tgif, tiny_masn_features, task, out, *TINY, "--epochs",
                                                "15", "--batch-size", "8", "--set", "train.lr=3e-3"),
                             catch_exceptions=False)
    assert res.exit_code == 0, res.output
    m = json.loads((out / "metrics.json").read_text())
    base = m["baselines_test"]
    if task == "frameqa":
        assert m["test"]["accuracy"] >= base["majority_answer_accuracy"] + 0.3
    elif task == "action":
        assert m["test"]["accuracy"] >= base["random_choice_accuracy"] + 0.3
    else:
        assert m["test"]["mse"] < base["train_mean_mse"]


def test_wrong_feature_set_is_refused(tiny_tgif, tmp_path):
    args = _args(tiny_tgif, tiny_tgif.features, "frameqa", tmp_path / "r", *TINY)
    res = CliRunner().invoke(build_cli(), args)
    assert res.exit_code != 0
    assert "holds feature set 'mspan' but model 'masn' needs 'masn'" in res.output
