"""Feature standardisation (``train.feature_norm``), the type-prior baseline and ``train.tools.report``."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from extract.reader import FeatureReader, write_feature_dir
from train.cli import build_cli
from train.config import ConfigError, TrainConfig
from train.data import QADataset, feature_statistics, padding_mask, standardize
from train.tools.report import format_report, main

TINY = [
    "--set", "model.node_dim=16", "--set", "model.hidden_dim=16", "--set", "model.word_dim=8",
    "--set", "model.lstm_layers=1", "--set", "model.num_scales=2", "--set", "model.iterations=1",
]


def test_feature_statistics_are_per_channel_over_distinct_videos(tmp_path):
    a = np.array([[1.0, 10.0], [3.0, 10.0]], dtype=np.float32)  # (T=2, D=2)
    b = np.array([[5.0, 20.0], [7.0, 20.0]], dtype=np.float32)
    write_feature_dir(tmp_path, "mspan", {"a": {"appearance": a}, "b": {"appearance": b}},
                      provenance={"test": True})
    reader = FeatureReader(tmp_path)
    stats = feature_statistics(reader, ["b", "a", "a"], ["appearance"])  # duplicates count once
    mean, std = stats["appearance"]
    np.testing.assert_allclose(mean, [4.0, 15.0])
    np.testing.assert_allclose(std, [np.sqrt(5.0), 5.0])


def _padded(real: np.ndarray, objects: np.ndarray, T: int) -> dict[str, np.ndarray]:
    """A masn-like video: its real rows, then zero rows up to T with the masks False."""
    n, M = objects.shape[:2]
    frame_mask = np.arange(T) < n
    pad = lambda x: np.concatenate([x, np.zeros((T - n, *x.shape[1:]), x.dtype)])  # noqa: E731
    return {"appearance": pad(real), "objects": pad(objects), "frame_mask": frame_mask,
            "object_mask": pad(np.array([[True, False]] * n))}


def test_padding_rows_change_neither_the_statistics_nor_the_real_rows(tmp_path):
    rng = np.random.default_rng(0)
    videos = {v: (3.0 + rng.standard_normal((n, 4)).astype(np.float32),
                  1.0 + rng.standard_normal((n, 2, 4)).astype(np.float32)) for v, n in (("a", 3), ("b", 5))}
    stats = {}
    for T in (5, 20):  # the same real rows padded to 5 or to 20 frames
        write_feature_dir(tmp_path / str(T), "masn", {v: _padded(r, o, T) for v, (r, o) in videos.items()},
                          provenance={"test": True})
        reader = FeatureReader(tmp_path / str(T))
        stats[T] = feature_statistics(reader, ["a", "b"], ["appearance", "objects"])
    real = np.concatenate([r for r, _ in videos.values()])  # (8, 4): the real frames only
    np.testing.assert_allclose(stats[20]["appearance"][0], real.mean(0), rtol=1e-5)
    np.testing.assert_allclose(stats[20]["appearance"][1], real.std(0), rtol=1e-5)
    objects = np.concatenate([o[:, 0] for _, o in videos.values()])  # object 1 of each frame is padding
    np.testing.assert_allclose(stats[20]["objects"][0], objects.mean(0), rtol=1e-5)
    for key in ("appearance", "objects"):
        for a, b in zip(stats[5][key], stats[20][key], strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-5)
    feats = _padded(*videos["a"], 20)
    assert padding_mask(feats, "appearance").tolist() == feats["frame_mask"].tolist()
    assert padding_mask(feats, "frame_mask") is None
    out = standardize(feats, "appearance", stats[20])
    assert (out[3:] == 0).all() and np.allclose(out[:3], (videos["a"][0] - stats[20]["appearance"][0])
                                                 / stats[20]["appearance"][1])
    assert (standardize(feats, "objects", stats[20])[:, 1] == 0).all()  # padded object rows stay zero


def test_dataset_applies_the_statistics(tiny_tgif):
    from pipelines.datasets import get_dataset
    from pipelines.text import prepare_qa

    prepared = prepare_qa(get_dataset("tgif")(tiny_tgif.root, task="frameqa"),
                          cache_dir=tiny_tgif.base / "cache-norm", answer_vocab_size=None)
    reader = FeatureReader(tiny_tgif.features)
    split = prepared.splits["train"]
    stats = feature_statistics(reader, split.video_ids, ["appearance", "motion"])
    plain = QADataset(split, reader)
    normed = QADataset(split, reader, feature_stats=stats)
    items = [normed[i]["appearance"].numpy() for i in range(len(normed))]
    raw = plain[0]["appearance"].numpy()
    mean, std = stats["appearance"]
    np.testing.assert_allclose(items[0], (raw - mean) / std, rtol=1e-6)
    # over the training videos the standardised channels have mean ~0
    distinct = {split.video_ids[i]: normed[i]["appearance"].numpy() for i in range(len(normed))}
    assert np.abs(np.concatenate(list(distinct.values())).mean(0)).max() < 1e-4


def test_feature_norm_is_validated():
    assert TrainConfig(feature_norm="standardize").feature_norm == "standardize"
    with pytest.raises(ConfigError, match="feature_norm"):
        TrainConfig(feature_norm="zscore")


def test_run_with_standardised_features_reports_baselines(tiny_tgif, tmp_path):
    out = tmp_path / "run"
    args = ["mspan", "--dataset", "tgif", "--task", "frameqa", "--root", str(tiny_tgif.root),
            "--features", str(tiny_tgif.features), "--out", str(out), "--no-progress", *TINY,
            "--epochs", "3", "--batch-size", "8", "--set", "train.feature_norm=standardize"]
    res = CliRunner().invoke(build_cli(), args, catch_exceptions=False)
    assert res.exit_code == 0, res.output
    metrics = json.loads((out / "metrics.json").read_text())
    base = metrics["baselines_test"]
    assert 0.0 <= base["majority_answer_accuracy"] <= base["type_prior_accuracy"] <= 1.0
    table = format_report([out])
    assert "tgif/frameqa" in table and "type_prior_accuracy" in table
    assert f"{metrics['test']['accuracy']:.3f}" in table


def test_report_names_an_unfinished_run(tmp_path, capsys):
    assert main([str(tmp_path)]) == 1
    assert "metrics.json" in capsys.readouterr().err


def test_report_gives_the_documented_range_beside_each_figure(tmp_path, capsys):
    for name, test in (("mspan-action", 0.775), ("mspan-count", 2.5)):
        run = tmp_path / name
        run.mkdir()
        metric, mode = ("accuracy", "max") if name.endswith("action") else ("mse", "min")
        (run / "metrics.json").write_text(json.dumps({
            "model": "mspan", "dataset": "tgif", "task": name.split("-")[1], "task_type": "mc",
            "selection_metric": metric, "selection_mode": mode, "val": {metric: 0.5}, "test": {metric: test},
            "baselines_test": {}, "provenance": None}))
    ranges = tmp_path / "ranges.json"
    ranges.write_text(json.dumps({"ranges": {"mspan-action": {"accuracy": [0.7, 0.8]},
                                             "mspan-count": {"mse": [1.4, 1.6]}}}))
    runs = [str(tmp_path / "mspan-action"), str(tmp_path / "mspan-count")]
    assert main([*runs, "--expected", str(ranges)]) == 0
    table = capsys.readouterr().out
    assert "documented range" in table.splitlines()[0]
    assert "0.775  0.700-0.800 ok" in table and "2.500  1.400-1.600 OUTSIDE" in table
