"""An interrupted run resumed with ``--resume`` ends exactly like an uninterrupted one."""

from __future__ import annotations

import json

import torch
from click.testing import CliRunner

from train.cli import build_cli

TINY = [
    "--set", "model.node_dim=16", "--set", "model.hidden_dim=16", "--set", "model.word_dim=8",
    "--set", "model.lstm_layers=1", "--set", "model.num_scales=2", "--set", "model.iterations=1",
    # dropout on, a step schedule and shuffling make the check depend on the RNG and scheduler state
    "--set", "model.dropout=0.2", "--set", "train.scheduler=step", "--set", "train.step_size=1",
    "--set", "train.lr=3e-3", "--batch-size", "8",
]


def _run(data, out, *extra):
    args = ["mspan", "--dataset", "tgif", "--task", "frameqa", "--root", str(data.root), "--features",
            str(data.features), "--out", str(out), "--no-progress", *TINY, *extra]
    res = CliRunner().invoke(build_cli(), args, catch_exceptions=False)
    assert res.exit_code == 0, res.output
    return json.loads((out / "metrics.json").read_text())


def _epoch_rows(path):
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    for r in rows:
        r.pop("seconds")
    return rows


def test_resume_equals_uninterrupted(tiny_tgif, tmp_path):
    full, part = tmp_path / "full", tmp_path / "part"
    want = _run(tiny_tgif, full, "--epochs", "2")
    _run(tiny_tgif, part, "--epochs", "1")  # "interrupted" after epoch 1
    assert not (part / "checkpoints" / "epoch-0002.pt").exists()
    got = _run(tiny_tgif, part, "--epochs", "2", "--resume")

    assert "resumed from" in (part / "train.log").read_text()
    for key in ("val", "test", "best_epoch", "epochs_completed"):
        assert got[key] == want[key], key
    assert _epoch_rows(part / "metrics.jsonl") == _epoch_rows(full / "metrics.jsonl")
    a = torch.load(full / "checkpoints" / "epoch-0002.pt", weights_only=True)
    b = torch.load(part / "checkpoints" / "epoch-0002.pt", weights_only=True)
    assert a["model"].keys() == b["model"].keys()
    for k in a["model"]:
        torch.testing.assert_close(a["model"][k], b["model"][k], rtol=0, atol=1e-6, msg=k)
    assert a["scheduler"] == b["scheduler"] and a["state"] == b["state"]
    for sa, sb in zip(a["optimizer"]["state"].values(), b["optimizer"]["state"].values(), strict=True):
        torch.testing.assert_close(sa["exp_avg_sq"], sb["exp_avg_sq"], rtol=0, atol=1e-9)
    assert (part / "predictions_test.jsonl").read_text() == (full / "predictions_test.jsonl").read_text()
