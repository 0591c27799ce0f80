"""Moment retrieval in the shared trainer: metrics, NMS, data, PCA cache, CMIN runs end to end."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
import torch
import yaml
from click.testing import CliRunner

from extract.featuredir import write_feature_dir
from pipelines.datasets import get_dataset
from pipelines.datasets.base import DatasetFormatError
from train.cli import build_cli
from train.moments import (
    MomentCollate,
    best_prior_moments,
    fit_pca,
    load_or_fit_pca,
    model_view,
    resample_steps,
)
from train.tasks import compute_metrics, get_task
from train.tasks.moment_losses import (
    moment_labels,
    moment_predictions,
    moment_records,
    nms_top_k,
    step_iou,
    temporal_iou,
)

COLOURS = ("red", "blue", "green", "yellow")


# ----------------------------------------------------------------------------- metrics
def _records(preds, gts, durations=None, iou="continuous", steps=200):
    durations = durations or [100.0] * len(gts)
    moments = [torch.tensor(p, dtype=torch.float64).view(-1, 2) for p in preds]
    scores = [torch.linspace(1, 0.1, len(p)) for p in preds]
    return moment_records([f"q{i}" for i in range(len(gts))], ["v"] * len(gts), moments, scores,
                          torch.tensor(gts, dtype=torch.float64), torch.tensor(durations), iou=iou,
                          num_steps=steps)


def test_metrics_exact_match_and_no_overlap():
    m = compute_metrics("moment", _records([[[10, 20]], [[50, 60]]], [[10, 20], [0, 5]]))
    for k in (1, 5):
        for t in (0.1, 0.3, 0.5, 0.7):
            assert m[f"R@{k},IoU={t}"] == 0.5
    assert m["mIoU"] == pytest.approx(0.5) and m["num_questions"] == 2
    assert get_task("moment").selection == ("R@1,IoU=0.5", "max")


def test_recall_at_5_counts_rank_5_not_rank_6():
    miss = [[80, 90]] * 4
    at5 = miss + [[10, 20]]
    at6 = miss + [[70, 75], [10, 20]]
    m5 = compute_metrics("moment", _records([at5], [[10, 20]]))
    m6 = compute_metrics("moment", _records([at6], [[10, 20]]))
    assert m5["R@5,IoU=0.7"] == 1.0 and m5["R@1,IoU=0.1"] == 0.0
    assert m6["R@5,IoU=0.1"] == 0.0


def test_iou_thresholds_and_formulas():
    iou = temporal_iou(torch.tensor([[0.0, 10.0]]), torch.tensor([5.0, 10.0]))
    assert float(iou) == pytest.approx(0.5)
    m = compute_metrics("moment", _records([[[0, 10]]], [[5, 10]]))
    assert m["R@1,IoU=0.5"] == 1.0 and m["R@1,IoU=0.7"] == 0.0
    # the official step formula: 10 steps over 10 s, [0, 10) -> steps 0..9, gt [5, 10] -> 5..9 (capped): 5/10
    s = step_iou(torch.tensor([[0.0, 10.0]]), torch.tensor([5.0, 10.0]), 10.0, 10)
    assert float(s) == pytest.approx(0.5)
    # [4, 5] s holds steps 4 and 5 (the official rule takes the step each time falls in); gt [4, 4] s step 4
    s = step_iou(torch.tensor([[4.0, 5.0]]), torch.tensor([4.0, 4.0]), 10.0, 10)
    assert float(s) == pytest.approx(0.5)
    assert set(compute_metrics("moment", _records([[[0, 10]]], [[5, 10]], iou="steps"))) >= {
        f"R@{k},IoU={t}" for k in (1, 5) for t in (0.1, 0.3, 0.5, 0.7, 0.9)}


def test_nms_suppresses_a_near_duplicate():
    windows = torch.tensor([[10.0, 20.0], [10.5, 20.0], [30.0, 40.0]])
    scores = torch.tensor([0.9, 0.8, 0.7])
    assert nms_top_k(windows, scores, threshold=0.5).tolist() == [0, 2]
    assert nms_top_k(windows, scores, threshold=1.0).tolist() == [0, 1, 2]
    assert nms_top_k(windows, scores, threshold=0.5, k=1).tolist() == [0]


def test_predictions_in_seconds_for_videos_of_different_lengths():
    # two videos: 4 valid steps of a 40 s video and 2 valid steps (padded to 4) of a 10 s video
    windows = torch.tensor([[0.0, 1.0], [1.0, 3.0], [2.0, 4.0]])  # steps
    outputs = {
        "window_scores": torch.tensor([[5.0, 0.0, -5.0], [-5.0, 5.0, 0.0]]),
        "window_offsets": torch.zeros(2, 3, 2),
        "window_mask": torch.tensor([[True, True, True], [True, False, False]]),
        "windows": windows,
        "num_steps": torch.tensor([4, 2]),
    }
    ranked = moment_predictions(outputs, durations=torch.tensor([40.0, 10.0]), nms_threshold=0.5)
    torch.testing.assert_close(ranked[0][0][0], torch.tensor([0.0, 10.0]))  # step 0..1 of 4 over 40 s
    assert len(ranked[1][0]) == 1  # only its valid window
    torch.testing.assert_close(ranked[1][0][0], torch.tensor([0.0, 5.0]))  # step 0..1 of 2 over 10 s


def test_labels_follow_the_official_rule():
    windows = torch.tensor([[0.0, 2.0], [0.0, 4.0], [4.0, 8.0], [-1.0, 3.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0, 0.0]])
    y = moment_labels(windows, mask, torch.tensor([[0.0, 4.0]]))
    torch.testing.assert_close(y, torch.tensor([[0.5, 1.0, 0.0, 0.0]]))
    y = moment_labels(windows, mask, torch.tensor([[0.0, 4.0]]), min_ratio=0.6)
    assert float(y[0, 0]) == 0.0


def test_resample_steps():
    x = np.arange(10, dtype=np.float32).reshape(10, 1)
    np.testing.assert_allclose(resample_steps(x, 5)[:, 0], [0.5, 2.5, 4.5, 6.5, 8.5])
    np.testing.assert_allclose(resample_steps(x[:3], 6)[:, 0], [0, 0, 1, 1, 2, 2])
    assert resample_steps(x[:3], 6, "longer").shape == (3, 1)


def test_collate_pads_and_masks():
    items = [{"qid": "a", "video_id": "v", "question": torch.tensor([3, 4]), "question_len": 2,
              "edges": torch.tensor([[0, 2], [0, 0]]), "clips": torch.ones(3, 2), "duration": 9.0,
              "moment": (1.0, 2.0)},
             {"qid": "b", "video_id": "w", "question": torch.tensor([5]), "question_len": 1,
              "edges": torch.zeros(1, 1, dtype=torch.int64), "clips": torch.ones(5, 2), "duration": 4.0,
              "moment": (0.0, 4.0)}]
    b = MomentCollate()(items)
    assert b["question"].tolist() == [[3, 4], [5, 0]] and b["edges"].shape == (2, 2, 2)
    assert b["clips_mask"].sum(1).tolist() == [3, 5] and b["moment"].shape == (2, 2)


def test_best_prior_counts_normalised_moments():
    windows, freq = best_prior_moments(np.array([0, 0, 5.0]), np.array([5, 10, 10.0]),
                                       np.array([10, 20, 10.0]), k=2, bins=10)
    np.testing.assert_allclose(windows[0], [0.0, 0.5])
    assert freq[0] == pytest.approx(2 / 3)


# ----------------------------------------------------------------------------- a tiny dataset
def _write_split(root, name, videos, rng):
    entries = {}
    for vid, length in videos:
        duration = float(length)  # one clip per second
        events, t = [], 1
        for c in rng.permutation(4)[:3]:
            w = int(rng.integers(2, 5))
            events.append((int(c), t, t + w))
            t += w + int(rng.integers(1, 3))
        entries[vid] = {"duration": duration,
                        "timestamps": [[float(s), float(e)] for _, s, e in events],
                        "sentences": [f"the {COLOURS[c]} ball moves ." for c, _, _ in events]}
    (root / name).write_text(json.dumps(entries))
    return entries


@pytest.fixture(scope="module")
def tiny_captions(tmp_path_factory):
    base = tmp_path_factory.mktemp("tiny_captions")
    root = base / "captions"
    root.mkdir()
    rng = np.random.default_rng(0)
    lengths = {f"v_{i:011d}": int(rng.integers(14, 22)) for i in range(40)}
    ids = sorted(lengths)
    anns = {}
    anns.update(_write_split(root, "train.json", [(v, lengths[v]) for v in ids[:32]], rng))
    anns.update(_write_split(root, "val_1.json", [(v, lengths[v]) for v in ids[32:]], rng))
    val2 = json.loads((root / "val_1.json").read_text())
    (root / "val_2.json").write_text(json.dumps(val2))
    items = {}
    for vid, entry in anns.items():
        x = 0.1 * rng.standard_normal((lengths[vid], 6)).astype(np.float32)
        for (s, e), sentence in zip(entry["timestamps"], entry["sentences"], strict=True):
            x[int(s):int(e), COLOURS.index(sentence.split()[1])] += 1.0
        items[vid] = {"clips": x, "clip_times": np.arange(lengths[vid], dtype=np.float32) + 0.5}
    feats = write_feature_dir(base / "features", "cmin", items, provenance={"weights": "synthetic"},
                              shard_size=10)
    return root, feats


TINY = ["--set", "moment.pca_dim=4", "--set", "moment.num_steps=16", "--set", "model.d_model=16",
        "--set", "model.word_dim=8", "--set", "model.num_heads=2", "--set", "model.window_widths=[2,3,4,6]",
        "--set", "model.freeze_embeddings=false", "--set", "train.warmup_updates=5",
        "--set", "train.lr=1e-2", "--set", "train.scheduler=none", "--set", "model.dropout=0.0",
        "--batch-size", "8"]


def _train(data, out, *extra):
    root, feats = data
    args = ["cmin", "--dataset", "activitynet-captions", "--root", str(root), "--features", str(feats),
            "--out", str(out), "--no-progress", *TINY, *extra]
    res = CliRunner().invoke(build_cli(), args, catch_exceptions=False)
    assert res.exit_code == 0, res.output
    return json.loads((out / "metrics.json").read_text()), res.output


@pytest.mark.slow
def test_cmin_learns_beyond_the_best_prior(tiny_captions, tmp_path):
    full = tmp_path / "full"
    want, output = _train(tiny_captions, full, "--epochs", "30")
    assert "best_prior/R@1,IoU=0.5" in output
    base = want["baselines_test"]
    assert want["task_type"] == "moment" and want["selection_metric"] == "R@1,IoU=0.5"
    # measured: mIoU 0.245 vs 0.204, R@1 IoU 0.5 0.250 vs 0.208 (it leaves the prior late)
    assert want["test"]["mIoU"] > base["best_prior/mIoU"] + 0.02, (want["test"], base)
    assert want["test"]["R@1,IoU=0.5"] > base["best_prior/R@1,IoU=0.5"], (want["test"], base)
    rows = [json.loads(line) for line in (full / "predictions_test.jsonl").read_text().splitlines()]
    assert len(rows) == want["test"]["num_questions"] and len(rows[0]["prediction"]) == 5
    assert set(rows[0]) >= {"qid", "video_id", "prediction", "answer", "ious", "iou"}
    header = (full / "predictions_test.csv").read_text().splitlines()[0]
    assert header.startswith("qid,video_id,gt_start,gt_end,iou,start_1,end_1,score_1,iou_1")
    assert list((full / "feature_cache").glob("pca-*.npz"))


def test_resume_equals_uninterrupted(tiny_captions, tmp_path):
    full, part = tmp_path / "full", tmp_path / "part"
    # the per-update warm-up + inverse square root schedule and dropout make it depend on the saved state
    sched = ("--set", "train.scheduler=inverse_sqrt", "--set", "model.dropout=0.2")
    want, _ = _train(tiny_captions, full, "--epochs", "3", *sched)
    _train(tiny_captions, part, "--epochs", "1", *sched)
    got, _ = _train(tiny_captions, part, "--epochs", "3", "--resume", *sched)
    for key in ("val", "test", "best_epoch"):
        assert got[key] == want[key], key
    a = torch.load(full / "checkpoints" / "epoch-0003.pt", weights_only=True)
    b = torch.load(part / "checkpoints" / "epoch-0003.pt", weights_only=True)
    for k in a["model"]:
        torch.testing.assert_close(a["model"][k], b["model"][k], rtol=0, atol=1e-6, msg=k)
    assert a["scheduler"] == b["scheduler"]
    assert (part / "predictions_test.jsonl").read_text() == (full / "predictions_test.jsonl").read_text()


def test_step_formula_switch_and_eval_only(tiny_captions, tmp_path):
    run = tmp_path / "run"
    got, _ = _train(tiny_captions, run, "--epochs", "1", "--set", "train.moment_iou=steps",
                    "--set", "train.moment_nms=0.3")
    assert 0.0 <= got["test"]["mIoU"] <= 1.0 and "random_window/R@5,IoU=0.5" in got["baselines_test"]
    assert got["moment_protocol"]["name"] == "steps" and got["moment_protocol"]["listed_nms"] == 0.3
    root, feats = tiny_captions
    res = CliRunner().invoke(build_cli(), [
        "cmin", "--dataset", "activitynet-captions", "--root", str(root), "--features", str(feats),
        "--out", str(tmp_path / "eval"), "--no-progress", "--eval-only", "--checkpoint",
        str(run / "checkpoints" / "best.pt"), "--set", "train.moment_iou=steps",
        "--set", "train.moment_nms=0.3"])
    assert res.exit_code == 0, res.output
    again = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert again["test"] == got["test"]


def test_pca_fitted_on_train_and_keyed_by_features(tiny_captions, tmp_path):
    from extract.reader import FeatureReader

    _, feats = tiny_captions
    reader = FeatureReader(feats)
    train = sorted(reader.ids)[:32]
    a = load_or_fit_pca(reader, train, 3, cache_dir=tmp_path)
    assert a.components.shape == (6, 3) and len(list(tmp_path.glob("pca-*.npz"))) == 1
    load_or_fit_pca(reader, train, 3, cache_dir=tmp_path)
    assert len(list(tmp_path.glob("pca-*.npz"))) == 1  # reused
    load_or_fit_pca(reader, train[:8], 3, cache_dir=tmp_path)
    assert len(list(tmp_path.glob("pca-*.npz"))) == 2  # other videos, other key
    other = write_feature_dir(tmp_path / "f2", "cmin", {v: {k: x * 2 for k, x in reader[v].items()}
                                                         for v in reader.ids}, provenance={"weights": "x2"})
    load_or_fit_pca(FeatureReader(other), train, 3, cache_dir=tmp_path)
    assert len(list(tmp_path.glob("pca-*.npz"))) == 3  # other features, other key
    x = np.asarray(reader[train[0]]["clips"])
    proj = a(x)
    assert proj.shape == (x.shape[0], 3)
    with pytest.raises(ValueError, match="pca_dim"):
        load_or_fit_pca(reader, train, 7, cache_dir=tmp_path)



def test_pca_cache_is_keyed_by_the_feature_fingerprint_provenance_records(tiny_captions, tmp_path):
    import shutil

    from extract.manifest import fingerprint, load_manifest, record_run, save_manifest
    from extract.reader import FeatureReader
    from train.provenance import feature_record

    _, feats = tiny_captions
    copy = shutil.copytree(feats, tmp_path / "feats")
    reader = FeatureReader(copy)
    train, cache = sorted(reader.ids)[:32], tmp_path / "cache"
    load_or_fit_pca(reader, train, 3, cache_dir=cache)
    # a manifest rewrite that changes no feature (a run record) keeps the fingerprint and the cache
    manifest = load_manifest(copy)
    before = fingerprint(manifest)
    record_run(manifest, "finished")
    save_manifest(copy, manifest)
    reread = FeatureReader(copy)
    assert fingerprint(reread.manifest) == before == feature_record(copy, reread)["fingerprint"]
    load_or_fit_pca(reread, train, 3, cache_dir=cache)
    assert len(list(cache.glob("pca-*.npz"))) == 1
    # a shard extracted again (another checksum) changes both: the projection is fitted anew
    manifest["shards"][0]["sha256"] = "0" * 64
    save_manifest(copy, manifest)
    changed = FeatureReader(copy)
    assert feature_record(copy, changed)["fingerprint"] != before
    load_or_fit_pca(changed, train, 3, cache_dir=cache)
    assert len(list(cache.glob("pca-*.npz"))) == 2


def test_center_clips_subtracts_each_videos_mean_before_the_pca(tiny_captions, tmp_path):
    from extract.reader import FeatureReader

    _, feats = tiny_captions
    reader = FeatureReader(feats)
    train = sorted(reader.ids)[:32]
    x = np.asarray(reader[train[0]]["clips"], dtype=np.float32)
    stats = (x.mean(0) + 1.0, x.std(0) + 0.5)
    # without projection or resampling change: standardised, then minus the video's own mean clip
    view = model_view(x, num_steps=len(x), resample="longer", feature_stats=stats, center=True)
    z = (x - stats[0]) / stats[1]
    np.testing.assert_allclose(view, z - z.mean(0), atol=1e-5)
    np.testing.assert_allclose(view.mean(0), 0.0, atol=1e-5)
    # adding a constant to every clip of a video changes nothing once centred
    shifted = model_view(x + 3.0, num_steps=len(x), resample="longer", center=True)
    np.testing.assert_allclose(shifted, model_view(x, num_steps=len(x), resample="longer", center=True),
                               atol=1e-4)
    assert not np.allclose(model_view(x, num_steps=len(x), resample="longer"), view)
    # the PCA is fitted on the centred clips, and cached under its own key
    plain = load_or_fit_pca(reader, train, 3, cache_dir=tmp_path)
    centred = load_or_fit_pca(reader, train, 3, cache_dir=tmp_path, center=True)
    assert len(list(tmp_path.glob("pca-*.npz"))) == 2
    refit = fit_pca(reader, train, 3, center=True)
    np.testing.assert_allclose(centred.components, refit.components, atol=1e-6)
    assert not np.allclose(np.abs(plain.components), np.abs(centred.components), atol=1e-3)
    np.testing.assert_allclose(centred.mean, 0.0, atol=1e-5)  # every video's clips average to zero


def test_center_clips_is_recorded_and_eval_only_uses_it(tiny_captions, tmp_path):
    """A run with ``moment.center_clips`` evaluates its checkpoint the same way (the view is in the config;
    ``vqa-answer`` is checked in test_answer_moments_mc.py, whose CMIN run centres too)."""
    run = tmp_path / "run"
    got, _ = _train(tiny_captions, run, "--epochs", "1", "--set", "moment.center_clips=true")
    assert "center_clips: true" in (run / "config.yaml").read_text()
    root, feats = tiny_captions
    res = CliRunner().invoke(build_cli(), [
        "cmin", "--dataset", "activitynet-captions", "--root", str(root), "--features", str(feats),
        "--out", str(tmp_path / "eval"), "--no-progress", "--eval-only", "--checkpoint",
        str(run / "checkpoints" / "best.pt")])
    assert res.exit_code == 0, res.output
    assert json.loads((tmp_path / "eval" / "metrics.json").read_text())["test"] == got["test"]


# ----------------------------------------------------------------------------- annotation rows
def test_end_before_start_is_refused(tmp_path):
    entry = {"v_aaaaaaaaaaa": {"duration": 10.0, "timestamps": [[5.0, 2.0]], "sentences": ["x"]}}
    for name in ("train.json", "val_1.json", "val_2.json"):
        (tmp_path / name).write_text(json.dumps(entry))
    with pytest.raises(DatasetFormatError, match=r"train.json.*v_aaaaaaaaaaa.*start 5.0 > end 2.0"):
        get_dataset("activitynet-captions")(tmp_path).moments("train")


def test_moment_past_the_end_is_clipped_and_reported(tmp_path, caplog):
    entry = {"v_aaaaaaaaaaa": {"duration": 10.0, "timestamps": [[5.0, 12.5], [1.0, 2.0]],
                               "sentences": ["x", "y"]}}
    for name in ("train.json", "val_1.json", "val_2.json"):
        (tmp_path / name).write_text(json.dumps(entry))
    with caplog.at_level(logging.WARNING):
        moments = get_dataset("activitynet-captions")(tmp_path).moments("train")
    assert (moments[0].start_s, moments[0].end_s) == (5.0, 10.0)
    assert "train.json: 1 moment(s) reach outside [0, duration]; clipped" in caplog.text


def test_official_gcn_files_are_read_with_their_parses(tmp_path):
    rows = [["v_bbbbbbbbbbb", 20.0, [2.0, 6.0], "A man runs.", ["a", "man", "runs"], [0, 1, 2],
             [[1, 0, 0], [3, 1, 0], [0, 5, 1]]]]
    for name in ("train_data_gcn.json", "val_data_gcn.json", "test_data_gcn.json"):
        (tmp_path / name).write_text(json.dumps(rows))
    adapter = get_dataset("activitynet-captions")(tmp_path)
    assert adapter.uses_gcn_files and adapter.task_type == "moment"
    m = adapter.moments("test")[0]
    assert (m.qid, m.query, m.start_s, m.end_s, m.duration_s) == ("test:v_bbbbbbbbbbb#0", "a man runs", 2.0,
                                                                   6.0, 20.0)
    parsed = json.loads(adapter.stored_parses(tmp_path / "cache").read_text())
    assert parsed["train:v_bbbbbbbbbbb#0"] == [[0, 1, "rel3"], [1, 2, "rel5"]]
    bad = [rows[0][:6] + [[[1, 0], [0, 1]]]]
    (tmp_path / "val_data_gcn.json").write_text(json.dumps(bad))
    with pytest.raises(DatasetFormatError, match="val_data_gcn.json: row 0"):
        get_dataset("activitynet-captions")(tmp_path).moments("val")


def test_checkpoints_carry_the_fitted_pca(tiny_captions, tmp_path):
    """vqa-answer projects a new video's clips without the run directory: best.pt holds the PCA."""
    from train.moments import Projection

    run = tmp_path / "run"
    _train(tiny_captions, run, "--epochs", "1")
    (cached,) = (run / "feature_cache").glob("pca-*.npz")
    meta = torch.load(run / "checkpoints" / "best.pt", weights_only=True)["meta"]
    proj = Projection.from_meta(meta)
    with np.load(cached) as z:
        np.testing.assert_array_equal(proj.mean, z["mean"])
        np.testing.assert_array_equal(proj.components, z["components"])
    assert proj.components.shape == (6, 4) and np.abs(proj.components).sum() > 0
    x = np.random.default_rng(0).standard_normal((5, 6)).astype(np.float32)
    np.testing.assert_allclose(proj(x), (x - proj.mean) @ proj.components, rtol=1e-6)
    assert Projection.from_meta({"feature_projection": {}}) is None
    assert Projection.from_meta({}) is None  # checkpoints from before: no projection recorded


# ----------------------------------------------------------------------------- the moment: section
def _cli(*args):
    return CliRunner().invoke(build_cli(), [str(a) for a in args], catch_exceptions=False)


def test_moment_settings_have_their_own_section(tiny_captions, tmp_path):
    """Data and loss settings live in ``moment:`` (``--set moment.KEY``), not in the network's config."""
    root, feats = tiny_captions
    base = ["cmin", "--dataset", "activitynet-captions", "--root", root, "--features", feats, "--out",
            tmp_path / "run"]
    res = _cli(*base, *TINY, "--print-config")
    assert res.exit_code == 0, res.output
    conf = yaml.safe_load(res.output)
    assert conf["moment"] == {"pca_dim": 4, "pca_whiten": False, "center_clips": False, "num_steps": 16,
                              "resample": "always", "label_min_ratio": 0.3, "reg_weight": 0.001,
                              "align_norm": "all", "gt_rule": "official"}
    assert conf["model"]["video_dim"] == 4 and "pca_dim" not in conf["model"]  # filled from moment.pca_dim
    assert conf["model"]["fusion"] == "concat" and conf["train"]["moment_iou"] == "official"
    assert conf["train"]["grad_clip"] is None and conf["train"]["amp"] == "fp32"  # the official code's
    # the older spelling still sets them; given both ways in one layer it is refused
    res = _cli(*base, "--set", "model.num_steps=12", "--set", "model.pca_dim=null",
               "--set", "model.num_heads=2", "--print-config")
    assert res.exit_code == 0, res.output
    conf = yaml.safe_load(res.output)
    assert conf["moment"]["num_steps"] == 12 and conf["model"]["video_dim"] == 6  # no PCA: the features' 6
    res = CliRunner().invoke(build_cli(), [str(a) for a in base] + ["--set", "model.pca_dim=4", "--set",
                                                                     "moment.pca_dim=5", "--print-config"])
    assert res.exit_code == 2 and "pca_dim given both as model.*" in res.output
    res = CliRunner().invoke(build_cli(), [str(a) for a in base] + ["--set", "moment.gt_rule=exact",
                                                                     "--print-config"])
    assert res.exit_code == 2 and "moment.gt_rule='exact' is invalid" in res.output
    res = _cli("cmin", "--help")
    assert "moment.align_norm" in res.output and "moment.pca_dim" in res.output


def test_moment_settings_are_refused_for_other_models(tiny_tgif, tmp_path):
    res = CliRunner().invoke(build_cli(), [
        "mspan", "--dataset", "tgif", "--task", "frameqa", "--root", str(tiny_tgif.root), "--features",
        str(tiny_tgif.features), "--out", str(tmp_path / "run"), "--set", "moment.pca_dim=8",
        "--print-config"])
    assert res.exit_code == 2 and "moment.pca_dim" in res.output and "does not retrieve moments" in res.output


def _to_older_layout(run):
    """Rewrite a run's config.yaml and checkpoints as the toolkit wrote them before the moment section:
    the data and loss settings as model.* keys, model.clips_dim, no integer anchors, no moment_config."""
    conf = yaml.safe_load((run / "config.yaml").read_text())
    moment = conf.pop("moment")
    assert (moment["align_norm"], moment["gt_rule"]) == ("valid", "continuous")  # what older runs did
    del moment["align_norm"], moment["gt_rule"]
    model = conf["model"]
    assert model.pop("official_boxes") is False
    model["clips_dim"] = 6
    del model["video_dim"]
    model.update(moment)
    (run / "config.yaml").write_text(yaml.safe_dump(conf, sort_keys=False))
    for path in (run / "checkpoints").glob("*.pt"):
        ck = torch.load(path, weights_only=True)
        meta = ck["meta"]
        values = json.loads(meta.pop("moment_config"))
        del values["align_norm"], values["gt_rule"]
        old = json.loads(meta["model_config"])
        del old["video_dim"], old["official_boxes"]
        meta["model_config"] = json.dumps({**old, **values, "clips_dim": 6}, sort_keys=True)
        torch.save(ck, path)


def test_runs_from_before_the_moment_section_resume_and_evaluate(tiny_captions, tmp_path):
    """An older run's config.yaml (``model.pca_dim`` ...) resumes as an uninterrupted run with the same
    settings, and its checkpoint (``model_config`` holding them) evaluates to the same numbers."""
    root, feats = tiny_captions
    older = [a.replace("moment.", "model.") for a in TINY]  # the older spelling, still accepted by --set
    then = ["--set", "moment.align_norm=valid", "--set", "moment.gt_rule=continuous",
            "--set", "model.official_boxes=false", "--set", "train.moment_iou=continuous"]
    first, _ = _train(tiny_captions, tmp_path / "old", "--epochs", "1", *then)  # TINY spells moment.*
    _to_older_layout(tmp_path / "old")
    res = _cli("cmin", "--dataset", "activitynet-captions", "--root", root, "--features", feats,
               "--out", tmp_path / "eval", "--no-progress", "--eval-only", "--checkpoint",
               tmp_path / "old" / "checkpoints" / "best.pt")
    assert res.exit_code == 0, res.output
    assert json.loads((tmp_path / "eval" / "metrics.json").read_text())["test"] == first["test"]
    res = _cli("cmin", "--dataset", "activitynet-captions", "--root", root, "--features", feats,
               "--out", tmp_path / "old", "--no-progress", *older, *then, "--epochs", "2", "--resume")
    assert res.exit_code == 0, res.output
    want, _ = _train(tiny_captions, tmp_path / "new", "--epochs", "2", *then)
    got = json.loads((tmp_path / "old" / "metrics.json").read_text())
    assert got["test"] == want["test"] and got["val"] == want["val"]
    gated = json.loads(torch.load(tmp_path / "new" / "checkpoints" / "best.pt",
                                  weights_only=True)["meta"]["model_config"])
    from train.config import ConfigError
    from train.moments import LEGACY_MODEL_KEYS, checkpoint_configs

    older_meta = {"model_config": json.dumps({**gated, "gcn_edge_gates": True, "clips_dim": 6,
                                              **{k: 1 for k in LEGACY_MODEL_KEYS}})}
    with pytest.raises(ConfigError, match="earlier scalar edge gates"):
        checkpoint_configs(older_meta, source="old.pt")
