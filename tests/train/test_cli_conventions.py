"""``vqa-train`` command-line conventions: user errors in one or two lines with the file named and no
traceback (exit 1), Ctrl-C -> 130, ``-h``, every key in ``--help``, ``--print-config``, a run's own
``config.yaml`` as ``--config``, a torn ``metrics.jsonl`` on ``--resume``, unreadable shards with
DataLoader workers, ``--threads`` in the log, validation labels in the progress bar."""

from __future__ import annotations

import json
import pickle
import shutil

import numpy as np
import pytest
import torch
import yaml

from extract.reader import write_feature_dir
from models.mspan import MSPANConfig
from train.config import TrainConfig, describe_fields
from train.loop import RunDirError, keep_epochs

TINY = [
    "--set", "model.node_dim=16", "--set", "model.hidden_dim=16", "--set", "model.word_dim=8",
    "--set", "model.lstm_layers=1", "--set", "model.num_scales=2", "--set", "model.iterations=1",
    "--set", "model.dropout=0.0",
]


def _args(data, out, *extra, features=None, tiny=True):
    return ["mspan", "--dataset", "tgif", "--task", "count", "--root", str(data.root), "--features",
            str(features or data.features), "--out", str(out), *(TINY if tiny else []), *extra]


def _main(args, capsys):
    """Run the console entry point in-process: (exit status, stdout, stderr)."""
    from train.cli import main

    with pytest.raises(SystemExit) as exc:
        main(args)
    out, err = capsys.readouterr()
    return exc.value.code, out, err


def _clean_error(code, err, *needles):
    assert code == 1, err
    assert "Traceback" not in err, err
    last = [ln for ln in err.splitlines() if ln.strip()][-1]
    for needle in needles:
        assert needle in last, (needle, err)
    return last


@pytest.fixture(scope="module")
def one_epoch_run(tiny_tgif, tmp_path_factory):
    from click.testing import CliRunner

    from train.cli import build_cli

    out = tmp_path_factory.mktemp("conv") / "run"
    res = CliRunner().invoke(build_cli(), _args(tiny_tgif, out, "--epochs", "1", "--no-progress",
                                                "--threads", "1"), catch_exceptions=False)
    assert res.exit_code == 0, res.output
    return out


def test_damaged_foreign_and_pickled_checkpoints_are_refused_in_one_line(
    tiny_tgif, one_epoch_run, tmp_path, capsys
):
    good = (one_epoch_run / "checkpoints" / "best.pt").read_bytes()
    cases = {
        "damaged.pt": good[: len(good) // 2],
        "text.pt": b"hello, not a checkpoint\n",
    }
    for name, data in cases.items():
        (tmp_path / name).write_bytes(data)

    import argparse

    # a pickled Python object, as in many research checkpoints (argparse.Namespace of the settings)
    torch.save({"model": {}, "args": argparse.Namespace(lr=1)}, tmp_path / "pickled.pt")
    torch.save(torch.zeros(3), tmp_path / "tensor.pt")
    with open(tmp_path / "plain.pt", "wb") as fh:
        pickle.dump({"model": 1}, fh)
    for name in ("damaged.pt", "text.pt", "pickled.pt", "tensor.pt", "plain.pt"):
        path = tmp_path / name
        code, _, err = _main(_args(tiny_tgif, tmp_path / f"e-{name}", "--eval-only", "--checkpoint",
                                   str(path), tiny=False), capsys)
        last = _clean_error(code, err, str(path))
        assert "weights_only" not in err and "trust" not in err, err
        assert len([ln for ln in err.splitlines() if ln.strip()]) <= 2, err
        if name == "pickled.pt":
            assert "pickled Python objects (it needs the Python object argparse.Namespace)" in last
            assert "refused" in last
        if name == "tensor.pt":
            assert "not a vqa-train checkpoint" in last


def test_unusable_output_directory_is_one_line(tiny_tgif, tmp_path, capsys, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    code, _, err = _main(_args(tiny_tgif, blocker / "run", "--epochs", "1", "--no-progress"), capsys)
    _clean_error(code, err, str(blocker / "run"))
    # a read-only file system (simulated: the tests run as root, which ignores permission bits)
    import errno
    import pathlib

    def read_only(self, *a, **k):
        raise OSError(errno.EROFS, "Read-only file system", str(self))

    monkeypatch.setattr(pathlib.Path, "mkdir", read_only)
    code, _, err = _main(_args(tiny_tgif, tmp_path / "ro" / "run", "--epochs", "1", "--no-progress"),
                         capsys)
    _clean_error(code, err, str(tmp_path / "ro"), "read-only", "--out")


@pytest.mark.parametrize("how", ["oserror", "torch"])
def test_a_full_disk_while_training_is_one_line_naming_the_checkpoint(tiny_tgif, tmp_path, capsys,
                                                                     monkeypatch, how):
    """0 bytes free: train.log's lines and the checkpoint cannot be written (simulated ENOSPC). torch's
    writer reports it as ENOSPC from the file object, or as its own "[enforce fail at inline_container.cc]"
    RuntimeError without a path."""
    import errno
    import logging

    import train.checkpoint

    def full(*_a, **_k):
        raise OSError(errno.ENOSPC, "No space left on device")

    class FullLog:  # what logging.FileHandler writes train.log to, on a full disk
        write = flush = staticmethod(full)

        def close(self):
            pass

    monkeypatch.setattr(logging.FileHandler, "_open", lambda self: FullLog())

    def save(_state, fh):
        fh.write(b"PK\x03\x04")  # torch's writer gets this far, then the disk is full
        if how == "torch":
            raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 576 vs 534")
        full()

    monkeypatch.setattr(train.checkpoint.torch, "save", save)
    usage = train.checkpoint.shutil.disk_usage
    monkeypatch.setattr(train.checkpoint.shutil, "disk_usage", lambda p: usage(p)._replace(free=0))
    out = tmp_path / "run"
    code, _, err = _main(_args(tiny_tgif, out, "--epochs", "2", "--no-progress"), capsys)
    last = _clean_error(code, err, f"cannot use {out / 'checkpoints' / 'epoch-0001.pt'}: No space left")
    assert "--- Logging error ---" not in err and ".tmp-" not in last, err
    assert err.count(f"cannot write {out / 'train.log'}") == 1, err  # said once, then the console only
    assert list((out / "checkpoints").iterdir()) == []  # no partial checkpoint under any name


def test_debug_shows_the_traceback(tiny_tgif, tmp_path, capsys):
    (tmp_path / "bad.pt").write_bytes(b"junk")
    args = _args(tiny_tgif, tmp_path / "r", "--eval-only", "--checkpoint", str(tmp_path / "bad.pt"),
                 tiny=False)
    code, _, err = _main(args, capsys)
    _clean_error(code, err, "bad.pt")
    from train.checkpoint import CheckpointError
    from train.cli import main

    with pytest.raises(Exception) as exc:  # noqa: PT011 - the traceback is the point
        main(["--debug", *args])
    assert isinstance(exc.value.__cause__ or exc.value, CheckpointError)


def test_ctrl_c_exits_130_with_a_resume_hint(tiny_tgif, tmp_path, capsys, monkeypatch):
    import train.cli as cli

    def interrupted(spec):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "run", interrupted)
    code, _, err = _main(_args(tiny_tgif, tmp_path / "r", "--no-progress"), capsys)
    assert code == 130 and "interrupted" in err and "--resume" in err and "Traceback" not in err


def test_help_lists_every_key_with_type_default_and_meaning(capsys):
    code, out, _ = _main(["mspan", "-h"], capsys)
    assert code == 0
    text = " ".join(out.split())  # unwrap
    for section, cls in (("train", TrainConfig), ("model", MSPANConfig)):
        for name, type_name, default, meaning in describe_fields(cls):
            assert meaning, f"{section}.{name} has no one-line meaning"
            assert f"{section}.{name} ({type_name}, default {default}): {meaning[:20]}" in text
    assert "train.lr (float, default 0.0001)" in text and "model.num_scales (int, default 8)" in text
    for argv in (["-h"], ["mspan", "--help"]):
        code, out, _ = _main(argv, capsys)
        assert code == 0 and "Usage:" in out


def test_print_config_and_a_runs_own_config_yaml(tiny_tgif, one_epoch_run, tmp_path, capsys):
    out = tmp_path / "never"
    code, printed, _ = _main(_args(tiny_tgif, out, "--print-config", "--epochs", "7"), capsys)
    assert code == 0 and not out.exists()  # nothing written
    conf = yaml.safe_load(printed)
    assert conf["train"]["epochs"] == 7 and conf["model"]["num_scales"] == 2 and conf["task_type"] == "count"
    saved = yaml.safe_load((one_epoch_run / "config.yaml").read_text())
    code, printed, err = _main(["mspan", "--dataset", "tgif", "--task", "count", "--root",
                                str(tiny_tgif.root), "--features", str(tiny_tgif.features), "--out",
                                str(out), "--config", str(one_epoch_run / "config.yaml"),
                                "--print-config"], capsys)
    assert code == 0, err
    again = yaml.safe_load(printed)
    assert again["train"] == saved["train"] and again["model"] == saved["model"]


def test_feature_set_mismatch_is_reported_before_model_settings(tiny_tgif, tmp_path, capsys):
    other = write_feature_dir(tmp_path / "f", "masn", {"g000": {"x": np.zeros((3, 5), np.float32)}},
                              provenance={})
    code, _, err = _main(_args(tiny_tgif, tmp_path / "r", "--set", "model.num_scales=99",
                               features=other), capsys)
    last = _clean_error(code, err, str(other), "holds feature set 'masn'", "vqa-extract --features mspan")
    assert "num_scales" not in err, last


def test_torn_last_line_of_metrics_is_dropped_on_resume(tiny_tgif, one_epoch_run, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(one_epoch_run, run)
    with open(run / "metrics.jsonl", "a", encoding="utf-8") as fh:
        fh.write('{"epoch": 2, "global_st')  # the process died while appending epoch 2
    code, out, err = _main(_args(tiny_tgif, run, "--resume", "--epochs", "2", "--no-progress"), capsys)
    assert code == 0, err
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2]
    assert "torn last line" in (run / "train.log").read_text()


def test_damaged_metrics_line_before_the_last_names_the_line(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"epoch": 1}\nxx garbage\n{"epoch": 2}\n', encoding="utf-8")
    with pytest.raises(RunDirError, match=r"metrics.jsonl line 2 is not a metrics record"):
        keep_epochs(path, 2)


def test_unreadable_shard_with_dataloader_workers_is_one_line(tiny_tgif, tmp_path, capsys):
    feats = tmp_path / "feats"
    shutil.copytree(tiny_tgif.features, feats)
    shard = sorted((feats / "shards").glob("*.h5"))[0]
    shard.write_bytes(b"not an hdf5 file")
    code, _, err = _main(_args(tiny_tgif, tmp_path / "r", "--epochs", "1", "--num-workers", "2",
                               "--no-progress", features=feats), capsys)
    _clean_error(code, err, str(shard), "cannot be opened")


def test_threads_are_set_and_recorded_in_the_log(one_epoch_run):
    assert "torch CPU threads: 1 per process" in (one_epoch_run / "train.log").read_text()


def test_progress_bar_labels_validation_metrics(capsys):
    from train.loop import Trainer, TrainState

    model = torch.nn.Linear(2, 1)
    batches = [{"x": torch.ones(2, 2)}] * 2

    def loss_fn(outputs, batch):
        return {"mse": outputs.pow(2).mean()}

    class Wrap(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.m = model

        def forward(self, batch):
            return self.m(batch["x"])

    trainer = Trainer(Wrap(), torch.optim.SGD(model.parameters(), lr=0.1), batches, task_type="count",
                      loss_fn=loss_fn, device=torch.device("cpu"), hooks=[], show_progress=True)
    trainer.state = TrainState(last_val={"accuracy": 0.5})
    trainer.train(1)
    err = capsys.readouterr().err
    assert "val_accuracy=0.5000" in err and "loss=" in err
