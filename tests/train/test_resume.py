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


class _Killed(Exception):
    """Stands for a kill, crash or full disk between the writes of epoch-NNNN.pt and best.pt."""


def _kill_before_best(monkeypatch, epoch):
    import train.loop

    real = train.loop.save_checkpoint

    def save(path, state):
        if path.name == "best.pt" and state["epoch"] == epoch:
            raise _Killed(f"killed before writing best.pt of epoch {epoch}")
        real(path, state)

    monkeypatch.setattr(train.loop, "save_checkpoint", save)


def _weights(path):
    return torch.load(path, weights_only=True)["model"]


def _same_weights(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# validation MSE here: 6.25, 2.5, 1.5, 1.5, 2.75: the best epoch is 3 of 5 (kept by keep_checkpoints=1 only
# until epoch 4)
COUNT = ["--task", "count", "--epochs", "5", "--set", "train.scheduler=none", "--set", "train.lr=1e-2",
         "--set", "train.grad_clip=12"]


def test_kill_between_epoch_and_best_checkpoint_is_repaired_on_resume(tiny_tgif, tmp_path, monkeypatch):
    full, part = tmp_path / "full", tmp_path / "part"
    want = _run(tiny_tgif, full, *COUNT)
    best = want["best_epoch"]
    assert 2 <= best < 5, "the test needs a best epoch after the first and before the last"
    _kill_before_best(monkeypatch, best)
    args = ["mspan", "--dataset", "tgif", "--root", str(tiny_tgif.root), "--features",
            str(tiny_tgif.features), "--out", str(part), "--no-progress", *TINY, *COUNT]
    res = CliRunner().invoke(build_cli(), args)
    assert isinstance(res.exception, _Killed), res.output
    monkeypatch.undo()
    ckpt = part / "checkpoints"
    assert (ckpt / f"epoch-{best:04d}.pt").exists()  # the epoch's checkpoint was written, best.pt not
    assert torch.load(ckpt / "best.pt", weights_only=True)["epoch"] < best

    got = _run(tiny_tgif, part, *COUNT, "--resume")
    assert "restored the model of the best epoch" in (part / "train.log").read_text()
    assert got["best_epoch"] == got["best_checkpoint_epoch"] == best
    assert got["best_checkpoint_sha256"] == want["best_checkpoint_sha256"]
    assert _same_weights(_weights(ckpt / "best.pt"), _weights(full / "checkpoints" / "best.pt"))
    assert got["test"] == want["test"] and got["val"] == want["val"]
    assert (part / "predictions_test.jsonl").read_text() == (full / "predictions_test.jsonl").read_text()


def test_stale_best_checkpoint_is_restored_or_refused_never_evaluated(tiny_tgif, tmp_path):
    full, part, pruned = tmp_path / "full", tmp_path / "part", tmp_path / "pruned"
    keep = ["--set", "train.keep_checkpoints=5"]
    want = _run(tiny_tgif, full, *COUNT, *keep)
    best = want["best_epoch"]
    assert 2 <= best < 5 and want["best_checkpoint_epoch"] == best
    other = 1  # a stale best.pt: an older model under the best epoch's label, copied by hand
    for out, extra in ((part, keep), (pruned, [])):
        _run(tiny_tgif, out, *COUNT, *extra)
        stale = torch.load(out / "checkpoints" / "best.pt", weights_only=True)
        stale["model"] = _weights(full / "checkpoints" / f"epoch-{other:04d}.pt")
        torch.save(stale, out / "checkpoints" / "best.pt")

    got = _run(tiny_tgif, part, *COUNT, *keep, "--resume")  # its epoch checkpoint is there: restored
    assert "its weights are not those of epoch" in (part / "train.log").read_text()
    assert got["best_checkpoint_epoch"] == best and got["test"] == want["test"]
    assert got["best_checkpoint_sha256"] == want["best_checkpoint_sha256"]

    args = ["mspan", "--dataset", "tgif", "--root", str(tiny_tgif.root), "--features",
            str(tiny_tgif.features), "--out", str(pruned), "--no-progress", *TINY, *COUNT, "--resume"]
    res = CliRunner().invoke(build_cli(), args)  # pruned (keep 1): refused, not evaluated
    assert res.exit_code == 1, res.output
    error = res.output.strip().splitlines()[-1]
    assert "best.pt" in error and "cannot be restored" in error and "Traceback" not in res.output
    metrics = json.loads((pruned / "metrics.json").read_text())  # the first run's, not a stale model's
    assert metrics["best_checkpoint_sha256"] == want["best_checkpoint_sha256"]
