"""``train.amp``: resolved for the device, recorded in the run's provenance, compared on ``--resume``,
taken from the checkpoint by ``--eval-only``; a bf16 run learns like an fp32 one.

The suite pins ``VQA_CPU_BF16=0`` (tests/conftest.py); setting it to 1 here simulates a CPU with native
bf16, on which ``auto`` resolves to bf16.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml
from click.testing import CliRunner

from models.layers import QuestionEncoder
from train.cli import build_cli
from train.config import ConfigError, TrainConfig
from train.provenance import check_precision, recorded_precision, train_precision

TINY = [
    "--set", "model.node_dim=16", "--set", "model.hidden_dim=16", "--set", "model.word_dim=8",
    "--set", "model.lstm_layers=1", "--set", "model.num_scales=2", "--set", "model.iterations=1",
    "--set", "model.dropout=0.0", "--batch-size", "8", "--set", "train.lr=1e-2",
]  # fmt: skip
CPU = torch.device("cpu")


def _invoke(data, out: Path, *extra: str, tiny: bool = True):
    args = ["mspan", "--dataset", "tgif", "--task", "frameqa", "--root", str(data.root), "--features",
            str(data.features), "--out", str(out), "--no-progress", *(TINY if tiny else []), *extra]
    return CliRunner().invoke(build_cli(), args)


def test_amp_values_resolve_per_device_and_old_spellings_still_read(monkeypatch):
    monkeypatch.setenv("VQA_CPU_BF16", "0")
    assert TrainConfig().amp == "auto"
    resolved = [train_precision(a, CPU) for a in ("auto", "bf16", "fp32", "none")]
    assert resolved == ["fp32", "bf16", "fp32", "fp32"]
    monkeypatch.setenv("VQA_CPU_BF16", "1")
    assert train_precision("auto", CPU) == "bf16"
    with pytest.raises(ConfigError, match="fp16.*CUDA only"):
        train_precision("fp16", CPU)
    with pytest.raises(ConfigError, match="train.amp"):
        TrainConfig(amp="half")
    # runs older than the record: autocast ran on CUDA only
    assert recorded_precision({"features": {}}, "bf16", CPU) == "fp32"
    assert recorded_precision(None, "bf16", torch.device("cuda")) == "bf16"
    assert recorded_precision({"precision": "bf16"}, "fp32", CPU) == "bf16"
    check_precision({"precision": "fp32"}, "auto", "fp32", "fp32", device=CPU, source="c.yaml")
    with pytest.raises(ConfigError, match=r"records training in fp32.*train.amp=fp32"):
        check_precision({"precision": "fp32"}, "auto", "auto", "bf16", device=CPU, source="c.yaml")


def test_precision_is_recorded_compared_on_resume_and_kept_by_eval_only(tiny_tgif, tmp_path, monkeypatch):
    out = tmp_path / "run"
    res = _invoke(tiny_tgif, out, "--epochs", "1", "--set", "train.amp=auto")  # MSPAN's default: fp32
    assert res.exit_code == 0, res.output
    conf = yaml.safe_load((out / "config.yaml").read_text())
    assert conf["train"]["amp"] == "auto" and conf["provenance"]["precision"] == "fp32"
    meta = torch.load(out / "checkpoints" / "best.pt", weights_only=True)["meta"]
    assert meta["provenance"]["precision"] == "fp32"
    assert json.loads((out / "metrics.json").read_text())["provenance"]["precision"] == "fp32"
    assert "precision: fp32" in (out / "train.log").read_text()

    monkeypatch.setenv("VQA_CPU_BF16", "1")  # the same run on a CPU with native bf16: auto is bf16 there
    res = _invoke(tiny_tgif, out, "--epochs", "2", "--resume")
    assert res.exit_code != 0
    assert "records training in fp32" in res.output and "--set train.amp=fp32" in res.output
    res = _invoke(tiny_tgif, out, "--epochs", "2", "--resume", "--set", "train.amp=fp32")
    assert res.exit_code == 0, res.output

    # an evaluation runs in the checkpoint's recorded precision, whatever auto means here
    ev = tmp_path / "ev"
    res = _invoke(tiny_tgif, ev, "--eval-only", "--checkpoint", str(out / "checkpoints" / "best.pt"),
                  tiny=False)
    assert res.exit_code == 0, res.output
    got = json.loads((ev / "metrics.json").read_text())
    assert got["provenance"]["precision"] == "fp32"
    assert got["test"] == json.loads((out / "metrics.json").read_text())["test"]

    # a run recorded before precision was: its config's amp (bf16, the old default) ran as fp32 on CPU
    conf = yaml.safe_load((out / "config.yaml").read_text())
    conf["train"]["amp"] = "bf16"
    del conf["provenance"]["precision"]
    (out / "config.yaml").write_text(yaml.safe_dump(conf))
    res = _invoke(tiny_tgif, out, "--epochs", "3", "--resume")
    assert res.exit_code != 0 and "records training in fp32" in res.output


def test_bf16_training_learns_like_fp32(tiny_tgif, tmp_path):
    """Explicit bf16 autocast on the CPU (emulated here when the CPU has no native bf16)."""
    acc = {}
    for amp in ("fp32", "bf16"):
        out = tmp_path / amp
        res = _invoke(tiny_tgif, out, "--epochs", "6", "--set", f"train.amp={amp}")
        assert res.exit_code == 0, res.output
        metrics = json.loads((out / "metrics.json").read_text())
        assert metrics["provenance"]["precision"] == amp
        acc[amp] = metrics["test"]["accuracy"]
    assert acc["fp32"] >= 0.6 and acc["bf16"] >= 0.6, acc  # 4 colours: chance is 0.25
    assert abs(acc["bf16"] - acc["fp32"]) <= 0.125, acc  # 16 test questions: within 2 of them


def test_question_encoder_runs_under_cpu_bf16_autocast_with_equal_lengths():
    """oneDNN's bf16 LSTM fails on CPUs without native bf16 when every question has one length."""
    enc = QuestionEncoder(20, embed_dim=8, hidden_dim=8)
    tokens = torch.randint(1, 20, (2, 5))
    want = enc(tokens, torch.tensor([5, 5]))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        words, sentence = enc(tokens, torch.tensor([5, 5]))  # float32 inside autocast: same values
    torch.testing.assert_close(words, want[0])
    torch.testing.assert_close(sentence, want[1])
