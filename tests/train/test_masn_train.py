"""MASN through ``vqa-train``: learning on each task type, the feature-set check, released weights."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from train.checkpoint import load_checkpoint
from train.cli import build_cli

sys.path.insert(0, str(Path(__file__).parent))
from test_convert_masn import official_state  # noqa: E402  (the synthetic official-format file)

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


def test_converted_official_weights_evaluate_through_vqa_train(tiny_tgif, tiny_masn_features, tmp_path):
    """A released-format file -> vqa-convert -> vqa-train --eval-only runs and reports test metrics."""
    from train.convert import build_cli as convert_cli

    convert = convert_cli()

    run = tmp_path / "run"  # one epoch, to learn this dataset's vocabulary sizes
    res = CliRunner().invoke(build_cli(), _args(tiny_tgif, tiny_masn_features, "frameqa", run, *TINY,
                                                "--epochs", "1"), catch_exceptions=False)
    assert res.exit_code == 0, res.output
    ck = load_checkpoint(run / "checkpoints" / "best.pt")
    vocab = ck["model"]["question_encoder.embedding.weight"].shape[0]
    answers = ck["meta"]["answer_vocab"]
    tensors = official_state(outputs=len(answers))
    tensors["glove.weight"] = torch.randn(vocab, tensors["glove.weight"].shape[1])
    for s, dim in (("appr", 8), ("motion", 8)):
        for part in ("local", "global"):
            tensors[f"compress_{s}_{part}.weight_raw"] = torch.randn(tensors["fc.weight"].shape[1], dim)
    torch.save(tensors, tmp_path / "official.pth")
    (tmp_path / "answers.txt").write_text("\n".join(answers) + "\n", encoding="utf-8")
    res = CliRunner().invoke(convert, ["masn", str(tmp_path / "official.pth"), "--out",
                                       str(tmp_path / "c.pt"), "--num-frames", "4", "--answer-vocab",
                                       str(tmp_path / "answers.txt")])
    assert res.exit_code == 0, res.output
    ev = tmp_path / "eval"
    args = _args(tiny_tgif, tiny_masn_features, "frameqa", ev, "--eval-only", "--checkpoint",
                 str(tmp_path / "c.pt"))
    res = CliRunner().invoke(build_cli(), args, catch_exceptions=False)
    assert res.exit_code == 0, res.output
    m = json.loads((ev / "metrics.json").read_text())
    assert 0.0 <= m["test"]["accuracy"] <= 1.0 and np.isfinite(m["test"]["accuracy"])
