"""DDP: 2 CPU processes (gloo, launched with torchrun) match 1 process on the same global batch."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch
from click.testing import CliRunner

from train.cli import build_cli

ARGS = [
    "--set", "model.node_dim=16", "--set", "model.hidden_dim=16", "--set", "model.word_dim=8",
    "--set", "model.lstm_layers=1", "--set", "model.num_scales=2", "--set", "model.iterations=1",
    "--set", "model.dropout=0.0", "--set", "model.readout_dropout=0.0", "--set", "train.lr=3e-3",
    "--epochs", "2",
    "--batch-size", "8",  # global: 4 per process with 2 processes; 32 training questions
    "--device", "cpu", "--no-progress",
]


def _args(data, out):
    return ["mspan", "--dataset", "tgif", "--task", "frameqa", "--root", str(data.root), "--features",
            str(data.features), "--out", str(out), *ARGS]


@pytest.mark.slow
def test_two_processes_match_one(tiny_tgif, tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           "-m", "train.cli", *_args(tiny_tgif, two)]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    res = CliRunner().invoke(build_cli(), _args(tiny_tgif, one), catch_exceptions=False)  # meanwhile
    assert res.exit_code == 0, res.output
    output, _ = proc.communicate(timeout=240)
    assert proc.returncode == 0, output[-4000:]

    m1 = json.loads((one / "metrics.json").read_text())
    m2 = json.loads((two / "metrics.json").read_text())
    for split in ("val", "test"):
        assert m2[split]["num_questions"] == m1[split]["num_questions"]  # nothing counted twice
        assert m2[split]["accuracy"] == pytest.approx(m1[split]["accuracy"], abs=1e-9)
    assert m2["best_epoch"] == m1["best_epoch"]
    rows1 = [json.loads(x) for x in (one / "metrics.jsonl").read_text().splitlines()]
    rows2 = [json.loads(x) for x in (two / "metrics.jsonl").read_text().splitlines()]
    assert [r["val"] for r in rows2] == [r["val"] for r in rows1]
    # the epoch's train loss is the mean over both processes' batches (equal halves of each global batch)
    for r1, r2 in zip(rows1, rows2, strict=True):
        assert r2["train"]["loss"] == pytest.approx(r1["train"]["loss"], abs=1e-4)
    # only rank 0 logs and prints the summary
    assert output.count("best checkpoint") == 1, output[-4000:]
    assert output.count("torch CPU threads") == 1, output[-4000:]
    p1 = torch.load(one / "checkpoints" / "epoch-0002.pt", weights_only=True)
    p2 = torch.load(two / "checkpoints" / "epoch-0002.pt", weights_only=True)
    assert len(p2["rng"]) == 2  # every process's RNG state is saved
    assert p1["model"].keys() == p2["model"].keys()
    for k, w in p1["model"].items():
        torch.testing.assert_close(p2["model"][k], w, rtol=0, atol=1e-5, msg=k)
    assert (one / "predictions_test.jsonl").read_text() == (two / "predictions_test.jsonl").read_text()


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_nodes_match_one(tiny_tgif, tmp_path):
    """Two torchrun launches as two "nodes" (--nnodes 2, c10d rendezvous on 127.0.0.1) equal one process."""
    one, two = tmp_path / "one", tmp_path / "two"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    rdzv = ["--nnodes=2", "--nproc_per_node=1", "--rdzv_backend=c10d",
            f"--rdzv_endpoint=127.0.0.1:{_free_port()}", "--rdzv_id=vqa-test-two-nodes"]
    procs = [
        subprocess.Popen([sys.executable, "-m", "torch.distributed.run", *rdzv, f"--node_rank={rank}",
                          "-m", "train.cli", *_args(tiny_tgif, two)],
                         env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for rank in (0, 1)
    ]
    res = CliRunner().invoke(build_cli(), _args(tiny_tgif, one), catch_exceptions=False)  # meanwhile
    assert res.exit_code == 0, res.output
    outputs = [p.communicate(timeout=300)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], "\n".join(o[-3000:] for o in outputs)
    m1 = json.loads((one / "metrics.json").read_text())
    m2 = json.loads((two / "metrics.json").read_text())
    for split in ("val", "test"):
        assert m2[split]["num_questions"] == m1[split]["num_questions"]
        assert m2[split]["accuracy"] == pytest.approx(m1[split]["accuracy"], abs=1e-9)
    rows1 = [json.loads(x) for x in (one / "metrics.jsonl").read_text().splitlines()]
    rows2 = [json.loads(x) for x in (two / "metrics.jsonl").read_text().splitlines()]
    assert [r["val"] for r in rows2] == [r["val"] for r in rows1]
    for r1, r2 in zip(rows1, rows2, strict=True):
        assert r2["train"]["loss"] == pytest.approx(r1["train"]["loss"], abs=1e-4)
    assert sum(o.count("best checkpoint") for o in outputs) == 1  # only global rank 0 reports
