"""``vqa-train`` end to end on tiny TGIF-QA data: outputs, selection on val, eval-only, rejections."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from click.testing import CliRunner

from extract.reader import FeatureReader, write_feature_dir
from train.checkpoint import load_checkpoint
from train.cli import build_cli


def _args(data, task: str, out: Path, *extra: str) -> list[str]:
    return [
        "mspan", "--dataset", "tgif", "--task", task, "--root", str(data.root), "--features",
        str(data.features), "--out", str(out), "--no-progress", *extra,
    ]


def _invoke(args: list[str]):
    return CliRunner().invoke(build_cli(), args, catch_exceptions=False)


TINY = [
    "--set", "model.node_dim=16", "--set", "model.hidden_dim=16", "--set", "model.word_dim=8",
    "--set", "model.lstm_layers=1", "--set", "model.num_scales=2", "--set", "model.iterations=1",
    "--set", "model.dropout=0.0",
]


def test_help_lists_models_and_datasets():
    res = _invoke(["--help"])
    assert res.exit_code == 0
    assert "mspan" in res.output and "tgif" in res.output and "msrvtt-qa" in res.output
    res = _invoke(["mspan", "--help"])
    assert res.exit_code == 0
    for word in ("--dataset", "--set", "--resume", "--eval-only", "train.lr", "model.num_scales"):
        assert word in res.output


@pytest.fixture(scope="module")
def frameqa_run(tiny_tgif, tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "frameqa"
    res = _invoke(_args(tiny_tgif, "frameqa", out, *TINY, "--epochs", "12", "--batch-size", "8",
                        "--set", "train.lr=1e-2"))
    assert res.exit_code == 0, res.output
    return out, res.output


def test_end_to_end_outputs_and_selection_on_val(frameqa_run):
    out, output = frameqa_run
    assert "test accuracy" in output
    for name in ("config.yaml", "train.log", "metrics.jsonl", "metrics.json", "predictions_test.jsonl",
                 "predictions_test.csv", "checkpoints/best.pt", "checkpoints/epoch-0012.pt"):
        assert (out / name).is_file(), name
    assert list((out / "tensorboard").glob("events.out.tfevents.*"))
    assert not list((out / "checkpoints").glob("epoch-0011.pt"))  # keep_checkpoints = 1

    conf = yaml.safe_load((out / "config.yaml").read_text())
    assert conf["model_name"] == "mspan" and conf["task_type"] == "open"
    assert conf["train"]["lr"] == 0.01 and conf["train"]["epochs"] == 12 and conf["train"]["batch_size"] == 8
    assert conf["model"]["node_dim"] == 16
    assert conf["model"]["num_frames"] == 4 and conf["model"]["appearance_dim"] == 8  # from the features

    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == list(range(1, 13))
    val = [r["val"]["accuracy"] for r in rows]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["best_epoch"] == 1 + int(np.argmax(val))  # first epoch with the best val accuracy
    assert metrics["val"]["accuracy"] == pytest.approx(max(val))
    assert metrics["best_checkpoint"] == str(out / "checkpoints" / "best.pt")
    assert load_checkpoint(out / "checkpoints" / "best.pt")["epoch"] == metrics["best_epoch"]
    # learned: clearly above the majority-answer baseline (4 balanced colours)
    assert metrics["test"]["accuracy"] >= metrics["baselines_test"]["majority_answer_accuracy"] + 0.4
    assert metrics["test"]["num_questions"] == 16 and "accuracy/color" in metrics["test"]

    preds = [json.loads(line) for line in (out / "predictions_test.jsonl").read_text().splitlines()]
    assert len(preds) == 16 and {"qid", "prediction", "answer", "correct"} <= set(preds[0])
    assert np.mean([p["correct"] for p in preds]) == pytest.approx(metrics["test"]["accuracy"])
    with open(out / "predictions_test.csv", newline="") as fh:
        assert [r["qid"] for r in csv.DictReader(fh)] == [p["qid"] for p in preds]


def test_eval_only_reproduces_the_test_metrics(frameqa_run, tiny_tgif, tmp_path):
    out, _ = frameqa_run
    res = _invoke(_args(tiny_tgif, "frameqa", tmp_path / "ev", "--eval-only", "--checkpoint",
                        str(out / "checkpoints" / "best.pt")))
    assert res.exit_code == 0, res.output
    got = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    want = json.loads((out / "metrics.json").read_text())
    assert got["test"] == want["test"] and got["val"] == want["val"] and got["eval_only"]
    preds = (tmp_path / "ev" / "predictions_test.jsonl").read_text()
    assert preds == (out / "predictions_test.jsonl").read_text()


@pytest.mark.parametrize("task, check", [("action", "accuracy"), ("count", "mse")])
def test_mc_and_count_learn(tiny_tgif, tmp_path, task, check):
    out = tmp_path / task
    res = _invoke(_args(tiny_tgif, task, out, *TINY, "--epochs", "12", "--batch-size", "8",
                        "--set", "train.lr=1e-2"))
    assert res.exit_code == 0, res.output
    m = json.loads((out / "metrics.json").read_text())
    if task == "action":
        assert m["test"]["accuracy"] >= m["baselines_test"]["random_choice_accuracy"] + 0.3
    else:
        assert m["test"]["mse"] < m["baselines_test"]["train_mean_mse"]
        pred = json.loads((out / "predictions_test.jsonl").read_text().splitlines()[0])
        assert 1 <= pred["prediction"] <= 10 and "raw_prediction" in pred


def test_per_task_defaults_are_in_config_yaml(tiny_tgif, tmp_path):
    assert TINY[-2:] == ["--set", "model.dropout=0.0"]
    tiny = TINY[:-2]  # keep the per-task dropout
    out = tmp_path / "count"
    res = _invoke(_args(tiny_tgif, "count", out, *tiny, "--epochs", "1", "--batch-size", "16"))
    assert res.exit_code == 0, res.output
    conf = yaml.safe_load((out / "config.yaml").read_text())
    assert conf["model"]["dropout"] == 0.2 and conf["model"]["readout_dropout"] == 0.2  # train_sh/count.sh
    assert conf["model"]["variant"] == "paper" and conf["model"]["share_iteration_weights"] is False
    assert conf["train"]["scheduler"] == "step" and conf["train"]["epochs"] == 1  # the flag wins
    out = tmp_path / "action"
    res = _invoke(_args(tiny_tgif, "action", out, *tiny, "--epochs", "1", "--batch-size", "16",
                        "--set", "model.readout_dropout=0.0"))
    assert res.exit_code == 0, res.output
    conf = yaml.safe_load((out / "config.yaml").read_text())
    assert conf["model"]["dropout"] == 0.1 and conf["model"]["readout_dropout"] == 0.0
    assert conf["train"]["scheduler"] == "multistep"


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--set", "train.learning_rate=1"], "unknown train key(s) train.learning_rate"),
        (["--set", "model.scales=3"], "valid keys: model.num_frames"),
        (["--set", "model.pool=median"], "model.pool='median' is invalid"),
        (["--set", "train.scheduler=cosine"], "choose none, step, multistep or inverse_sqrt"),
        (["--epochs", "0"], "train.epochs=0 is invalid"),
        (["--set", "lr=1"], "train.<field>, model.<field> or moment.<field>"),
        (["--set", "model.appearance_dim=2048"], "features' 'appearance' have size 8"),
        (["--eval-only"], "--eval-only needs --checkpoint"),
    ],
)
def test_bad_settings_are_rejected_before_running(tiny_tgif, tmp_path, extra, message):
    res = CliRunner().invoke(build_cli(), _args(tiny_tgif, "frameqa", tmp_path / "r", *extra))
    assert res.exit_code == 2, res.output
    assert message in res.output
    assert not (tmp_path / "r").exists()


def test_bad_task_and_wrong_feature_set(tiny_tgif, tmp_path):
    res = CliRunner().invoke(build_cli(), _args(tiny_tgif, "kayak", tmp_path / "r"))
    assert res.exit_code == 2 and "unknown task 'kayak'" in res.output
    other = write_feature_dir(tmp_path / "f", "hcrn", {"g000": {"x": np.zeros((2, 2), np.float32)}},
                              provenance={})
    args = _args(tiny_tgif, "frameqa", tmp_path / "r", *TINY)
    args[args.index("--features") + 1] = str(other)
    res = CliRunner().invoke(build_cli(), args)
    assert res.exit_code == 1 and "holds feature set 'hcrn' but model 'mspan' needs 'mspan'" in res.output


def test_missing_features_fail_or_are_dropped(tiny_tgif, tmp_path):
    full = FeatureReader(tiny_tgif.features)
    keep = [v for v in full.ids if v not in ("g001", "g020")]
    part = write_feature_dir(tmp_path / "part", "mspan", {v: full[v] for v in keep}, provenance={})
    args = _args(tiny_tgif, "frameqa", tmp_path / "r", *TINY, "--epochs", "1")
    args[args.index("--features") + 1] = str(part)
    res = CliRunner().invoke(build_cli(), args)
    assert res.exit_code == 1
    assert "have no features, e.g. g001" in res.output and "--allow-missing-features" in res.output
    res = CliRunner().invoke(build_cli(), [*args, "--allow-missing-features"])
    assert res.exit_code == 0, res.output
    m = json.loads((tmp_path / "r" / "metrics.json").read_text())
    assert m["dropped_questions"]["test"] == {"missing_features": 2}
    assert m["test"]["num_questions"] == 14
    assert "dropped 2 questions" in (tmp_path / "r" / "train.log").read_text()


def test_resume_refuses_a_changed_config(tiny_tgif, tmp_path):
    out = tmp_path / "r"
    assert _invoke(_args(tiny_tgif, "count", out, *TINY, "--epochs", "1")).exit_code == 0
    res = CliRunner().invoke(build_cli(), _args(tiny_tgif, "count", out, "--resume", "--epochs", "2",
                                                "--set", "train.lr=0.5"))
    assert res.exit_code == 2 and "train.lr: 0.0001 -> 0.5" in res.output
    res = CliRunner().invoke(build_cli(), _args(tiny_tgif, "count", out, *TINY, "--epochs", "1"))
    assert res.exit_code == 2 and "already holds a run (epoch-0001.pt); pass --resume" in res.output
    assert torch.load(out / "checkpoints" / "epoch-0001.pt", weights_only=True)["epoch"] == 1


def test_non_finite_loss_stops_the_run(tiny_tgif, tmp_path):
    full = FeatureReader(tiny_tgif.features)
    # finite features so large that the model overflows (NaN features are refused earlier, see below)
    items = {v: {k: np.full_like(a, 3e38) for k, a in full[v].items()} for v in full.ids}
    bad = write_feature_dir(tmp_path / "huge", "mspan", items, provenance={})
    args = _args(tiny_tgif, "count", tmp_path / "r", *TINY, "--epochs", "2")
    args[args.index("--features") + 1] = str(bad)
    res = CliRunner().invoke(build_cli(), args)
    assert res.exit_code == 1
    assert "non-finite loss at epoch 1, step 1 (global step 1)" in res.output
    assert not (tmp_path / "r" / "checkpoints" / "epoch-0001.pt").exists()
