"""Results you can trust: eval-only settings from the checkpoint, the run lock, the provenance record,
feature changes refused, non-finite features, GloVe coverage, file modes."""

from __future__ import annotations

import json
import os
import shutil
import stat
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
import yaml
from click.testing import CliRunner

from extract.manifest import load_manifest, save_manifest, shard_stamp
from extract.reader import FeatureReader, write_feature_dir
from pipelines.atomic import directory_lock
from train.cli import build_cli
from train.tools.report import format_report

TINY = [
    "--set", "model.node_dim=16", "--set", "model.hidden_dim=16", "--set", "model.word_dim=8",
    "--set", "model.lstm_layers=1", "--set", "model.num_scales=2", "--set", "model.iterations=1",
    "--set", "model.dropout=0.0",
]


def _args(data, out: Path, *extra: str, features: Path | None = None, task: str = "frameqa") -> list[str]:
    return [
        "mspan", "--dataset", "tgif", "--task", task, "--root", str(data.root), "--features",
        str(features or data.features), "--out", str(out), "--no-progress", *extra,
    ]


def _invoke(args: list[str]):
    return CliRunner().invoke(build_cli(), args)


@pytest.fixture(scope="module")
def std_run(tiny_tgif, tmp_path_factory):
    """A FrameQA run trained with standardised features (the demo's setting)."""
    out = tmp_path_factory.mktemp("trust") / "run"
    res = _invoke(_args(tiny_tgif, out, *TINY, "--epochs", "3", "--batch-size", "8", "--set", "train.lr=1e-2",
                        "--set", "train.feature_norm=standardize"))
    assert res.exit_code == 0, res.output
    return out


def _snapshot(out: Path) -> dict[str, tuple[bytes, int]]:
    return {p.relative_to(out).as_posix(): (p.read_bytes(), p.stat().st_mtime_ns)
            for p in out.rglob("*") if p.is_file() and ".lock" not in p.name}


def test_eval_only_takes_the_settings_from_the_checkpoint_and_keeps_the_run(std_run, tiny_tgif):
    before = _snapshot(std_run)
    best = std_run / "checkpoints" / "best.pt"
    # no train.feature_norm on the command line: it comes from the checkpoint
    res = _invoke(_args(tiny_tgif, std_run, "--eval-only", "--checkpoint", str(best), "--batch-size", "4"))
    assert res.exit_code == 0, res.output
    assert _snapshot(std_run).items() >= before.items()  # nothing of the run changed
    ev = std_run / "eval-best"
    got = json.loads((ev / "metrics.json").read_text())
    want = json.loads((std_run / "metrics.json").read_text())
    assert got["test"] == want["test"] and got["val"] == want["val"] and got["eval_only"]
    assert (ev / "predictions_test.jsonl").read_text() == (std_run / "predictions_test.jsonl").read_text()
    assert yaml.safe_load((ev / "eval_config.yaml").read_text())["train"]["feature_norm"] == "standardize"
    assert str(ev) in res.output

    # a flag that contradicts the checkpoint is refused, naming it
    res = _invoke(_args(tiny_tgif, std_run, "--eval-only", "--checkpoint", str(best),
                        "--set", "train.feature_norm=none"))
    assert res.exit_code == 2
    assert "train.feature_norm='none' (checkpoint: 'standardize')" in res.output
    res = _invoke(_args(tiny_tgif, std_run, "--eval-only", "--checkpoint", str(best), "--eval-name", "again"))
    assert res.exit_code == 0 and (std_run / "eval-again" / "metrics.json").is_file()


def test_provenance_is_recorded_everywhere(std_run, tiny_tgif):
    record = yaml.safe_load((std_run / "config.yaml").read_text())["provenance"]
    features = record["features"]
    assert features["dir"] == str(tiny_tgif.features.resolve())
    assert features["fingerprint"].startswith("sha256:") and len(features["fingerprint"]) == 71
    assert features["feature_set"] == "mspan" and features["random_weights"] is False
    assert features["provenance"]["weights"] == "synthetic" and features["videos"] == 26
    assert record["glove"] is None
    metrics = json.loads((std_run / "metrics.json").read_text())
    assert metrics["provenance"] == record
    for name in ("best.pt", "epoch-0003.pt"):
        ckpt = torch.load(std_run / "checkpoints" / name, map_location="cpu", weights_only=True)
        assert ckpt["meta"]["provenance"] == record
    log = (std_run / "train.log").read_text()
    assert f"fingerprint {features['fingerprint']}" in log and "backbone weights pretrained" in log
    assert features["fingerprint"].removeprefix("sha256:")[:12] in format_report([std_run])


def _changed_features(src: Path, dst: Path) -> Path:
    reader = FeatureReader(src)
    items = {v: reader[v] for v in reader.ids}
    items["g000"] = {k: a + 1.0 for k, a in items["g000"].items()}
    return write_feature_dir(dst, "mspan", items, provenance={"weights": "synthetic"}, shard_size=10)


def test_resume_and_eval_on_other_features_are_refused(std_run, tiny_tgif, tmp_path):
    out = tmp_path / "r"
    assert _invoke(_args(tiny_tgif, out, *TINY, "--epochs", "1")).exit_code == 0
    other = _changed_features(tiny_tgif.features, tmp_path / "other")
    res = _invoke(_args(tiny_tgif, out, *TINY, "--epochs", "2", "--resume", features=other))
    assert res.exit_code == 2 and "--resume: the features differ" in res.output
    assert "--allow-feature-change" in res.output
    assert not (out / "checkpoints" / "epoch-0002.pt").exists()

    moved = shutil.copytree(tiny_tgif.features, tmp_path / "moved")  # same content elsewhere: accepted
    res = _invoke(_args(tiny_tgif, out, *TINY, "--epochs", "2", "--resume", features=moved))
    assert res.exit_code == 0, res.output

    res = _invoke(_args(tiny_tgif, out, *TINY, "--epochs", "3", "--resume", "--allow-feature-change",
                        features=other))
    assert res.exit_code == 0, res.output
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["feature_change"]["previous_dir"] == str(Path(moved).resolve())  # the last recorded
    assert metrics["provenance"]["features"]["dir"] == str(other.resolve())

    best = std_run / "checkpoints" / "best.pt"
    res = _invoke(_args(tiny_tgif, tmp_path / "ev", "--eval-only", "--checkpoint", str(best), features=other))
    assert res.exit_code == 2 and "--eval-only: the features differ" in res.output


def test_a_second_run_on_the_same_out_is_refused(tiny_tgif, tmp_path):
    out = tmp_path / "busy"
    with directory_lock(out, ".vqa-train.lock", message="held by the test"):
        res = _invoke(_args(tiny_tgif, out, *TINY, "--epochs", "1"))
    assert res.exit_code == 1
    assert f"{out} is in use by another vqa-train process" in res.output and "Traceback" not in res.output
    assert not (out / "metrics.jsonl").exists() and not (out / "config.yaml").exists()
    assert _invoke(_args(tiny_tgif, out, *TINY, "--epochs", "1")).exit_code == 0  # released


def test_random_weight_features_print_a_banner(tiny_tgif, tmp_path):
    reader = FeatureReader(tiny_tgif.features)
    items = {v: reader[v] for v in reader.ids}
    rnd = write_feature_dir(tmp_path / "rnd", "mspan", items, provenance={"backbone": {"weights": "random"}})
    out = tmp_path / "r"
    res = _invoke(_args(tiny_tgif, out, *TINY, "--epochs", "1", features=rnd))
    assert res.exit_code == 0, res.output
    assert "RANDOM backbone weights" in res.output and "NOT research results" in res.output
    assert "RANDOM backbone weights" in (out / "train.log").read_text()
    assert json.loads((out / "metrics.json").read_text())["provenance"]["features"]["random_weights"] is True
    assert "RANDOM WEIGHTS" in format_report([out])


def _extracted_so(features: Path, shard: Path) -> None:
    """Record an edited shard's checksum in the manifest, as if the extraction had written it so."""
    manifest = load_manifest(features)
    entry = next(e for e in manifest["shards"] if e["name"] == shard.name)
    entry.update(shard_stamp(shard))
    save_manifest(features, manifest)


def test_an_altered_but_finite_shard_is_refused_naming_it(tiny_tgif, tmp_path):
    bad = shutil.copytree(tiny_tgif.features, tmp_path / "altered")
    shard = bad / "shards" / "shard-00001.h5"
    with h5py.File(shard, "r+") as f:
        f["appearance"][2, 1, 3] += 0.25  # finite, plausible: only its checksum tells
    res = _invoke(_args(tiny_tgif, tmp_path / "r", *TINY, "--epochs", "1", features=bad))
    assert res.exit_code == 1, res.output
    error = [line for line in res.output.splitlines() if "shard-00001.h5" in line]
    assert len(error) == 1 and "checksum (sha256) differs" in error[0], res.output
    assert f"vqa-extract verify {bad}" in error[0] and "Traceback" not in res.output
    assert not (tmp_path / "r" / "metrics.json").exists()

    # an intact copy (new modification times) is checked once, then trusted from the run's record
    copy = shutil.copytree(tiny_tgif.features, tmp_path / "copy", copy_function=shutil.copy)
    res = _invoke(_args(tiny_tgif, tmp_path / "r2", *TINY, "--epochs", "1", features=copy))
    assert res.exit_code == 0, res.output
    checked = json.loads((tmp_path / "r2" / "feature_cache" / "verified-shards.json").read_text())
    assert sorted(Path(p).name for p in checked) == sorted(p.name for p in (copy / "shards").glob("*.h5"))


def test_a_nan_test_row_stops_the_evaluation_naming_the_video(tiny_tgif, tmp_path):
    bad = shutil.copytree(tiny_tgif.features, tmp_path / "nan")
    shard = bad / "shards" / "shard-00002.h5"  # g020..g025: test videos
    with h5py.File(shard, "r+") as f:
        row = [s.decode() for s in f["ids"][()]].index("g021")
        f["appearance"][row, 1, 3] = np.nan
    _extracted_so(bad, shard)
    res = _invoke(_args(tiny_tgif, tmp_path / "r", *TINY, "--epochs", "1", features=bad))
    assert res.exit_code == 1
    assert "video 'g021': feature 'appearance' holds NaN or infinite values" in res.output
    assert "Traceback" not in res.output
    assert not (tmp_path / "r" / "metrics.json").exists()


def _glove(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n")
    return path


def test_glove_coverage_is_recorded_and_zero_coverage_refused(tiny_tgif, tmp_path):
    words = ["what", "color", "is", "the", "ball"]
    good = _glove(tmp_path / "g.txt", [f"{w} {' '.join(['0.5'] * 8)}" for w in words])
    out = tmp_path / "r"
    res = _invoke(_args(tiny_tgif, out, *TINY, "--epochs", "1", "--glove", str(good)))
    assert res.exit_code == 0, res.output
    glove = json.loads((out / "metrics.json").read_text())["provenance"]["glove"]
    assert glove["found"] == 5 and glove["words"] > 5
    assert glove["coverage"] == pytest.approx(5 / glove["words"])
    assert f"GloVe: 5/{glove['words']} vocabulary words found" in (out / "train.log").read_text()

    none = _glove(tmp_path / "none.txt", [f"zz{i} {' '.join(['0.5'] * 8)}" for i in range(3)])
    res = _invoke(_args(tiny_tgif, tmp_path / "z", *TINY, "--epochs", "1", "--glove", str(none)))
    assert res.exit_code == 2 and "matches none of the" in res.output
    assert "train.allow_zero_glove_coverage=true" in res.output
    res = _invoke(_args(tiny_tgif, tmp_path / "z2", *TINY, "--epochs", "1", "--glove", str(none),
                        "--set", "train.allow_zero_glove_coverage=true"))
    assert res.exit_code == 0, res.output
    assert json.loads((tmp_path / "z2" / "metrics.json").read_text())["provenance"]["glove"]["found"] == 0

    bad = _glove(tmp_path / "bad.txt",
                 ["what " + " ".join(["0.5"] * 8), "color 0.5 nan " + " ".join(["1.0"] * 6)])
    res = _invoke(_args(tiny_tgif, tmp_path / "b", *TINY, "--epochs", "1", "--glove", str(bad)))
    assert res.exit_code == 1 and "Traceback" not in res.output
    assert "bad.txt: line 2: NaN or infinite value in the vector of 'color'" in res.output


def test_run_outputs_are_readable_by_group_and_others(tiny_tgif, tmp_path):
    old = os.umask(0o022)
    try:
        out = tmp_path / "r"
        assert _invoke(_args(tiny_tgif, out, *TINY, "--epochs", "1")).exit_code == 0
    finally:
        os.umask(old)
    for name in ("config.yaml", "metrics.json", "metrics.jsonl", "predictions_test.jsonl",
                 "predictions_test.csv", "checkpoints/best.pt", "checkpoints/epoch-0001.pt"):
        assert stat.S_IMODE((out / name).stat().st_mode) & 0o044 == 0o044, name


def test_a_nan_training_row_stops_standardisation_naming_the_video(tiny_tgif, tmp_path):
    bad = shutil.copytree(tiny_tgif.features, tmp_path / "nan")
    with h5py.File(bad / "shards" / "shard-00000.h5", "r+") as f:
        f["motion"][3, 0, 0] = np.inf  # g003, a training video
    _extracted_so(bad, bad / "shards" / "shard-00000.h5")
    res = _invoke(_args(tiny_tgif, tmp_path / "r", *TINY, "--epochs", "1",
                        "--set", "train.feature_norm=standardize", features=bad))
    assert res.exit_code == 1
    assert "video 'g003': feature 'motion' holds NaN or infinite values" in res.output
