"""Imported (released) features through the ordinary commands: a converted MSPAN / MASN checkpoint evaluated
with ``vqa-train --eval-only`` on features imported from the official layouts gives the converted
network's own predictions on the raw arrays (read as the official loaders read them: by each question's
key); MSPAN, MASN and CMIN train on imported features; ``vqa-answer`` refuses a model trained on them in
one line, and recomputes them with ``--features-like`` (an extraction standing in for the release).
"""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path
from types import SimpleNamespace

import h5py
import numpy as np
import pytest
import torch
from click.testing import CliRunner

from extract.cli import cli as extract_cli
from extract.featuresets import FeatureOptions, build_feature_set
from extract.reader import FeatureReader, write_feature_dir
from models import get_model
from pipelines.videowrite import write_video
from train.checkpoint import load_checkpoint
from train.cli import build_cli as train_cli
from train.config import build_config
from train.tools.answer import Answerer, ImportedFeaturesError
from train.tools.convert import build_cli as convert_cli
from train.tools.report import format_report

sys.path.insert(0, str(Path(__file__).parent))
from conftest import MASN_FRAMES, MASN_OBJECTS, TINY_MODEL  # noqa: E402
from test_convert_eval import (  # noqa: E402
    ANSWERS,
    MASN_WORDS,
    _evaluate,
    _mspan_official,
    _predictions,
    _released_masn_checkpoint,
)

TASKS = ("frameqa", "action", "count")


@pytest.fixture(scope="module")
def keyed(tiny_tgif, tmp_path_factory):
    """``tiny_tgif``'s annotations with integer question keys (the released files are keyed by them)."""
    root = tmp_path_factory.mktemp("keyed") / "tgif"
    (root / "dataset").mkdir(parents=True)
    numbers: dict[str, int] = {}
    for task in TASKS:
        for split in ("Train", "Test"):
            name = f"{split}_{task}_question.csv"
            with open(tiny_tgif.root / "dataset" / name, encoding="utf-8") as fh:
                rows = list(csv.DictReader(fh, delimiter="\t"))
            for row in rows:
                row["key"] = str(numbers.setdefault(row["key"], 100 + len(numbers)))
            with open(root / "dataset" / name, "w", encoding="utf-8", newline="") as fh:
                w = csv.DictWriter(fh, fieldnames=list(rows[0]), delimiter="\t")
                w.writeheader()
                w.writerows(rows)
    return SimpleNamespace(root=root, features=tiny_tgif.features)


def _rows(data, task: str = "frameqa", split: str = "Test") -> list[dict[str, str]]:
    with open(data.root / "dataset" / f"{split}_{task}_question.csv", encoding="utf-8") as fh:
        return list(csv.DictReader(fh, delimiter="\t"))


def _all_rows(data, task: str = "frameqa") -> list[dict[str, str]]:
    return _rows(data, task, "Train") + _rows(data, task, "Test")


def _import(*args: str) -> None:
    res = CliRunner().invoke(extract_cli, ["import", *args])
    assert res.exit_code == 0, res.output


def _net(ckpt: Path, vocab: int, answers: int, task_type: str = "open") -> torch.nn.Module:
    meta = load_checkpoint(ckpt)["meta"]
    entry = get_model(meta["model_name"])
    net = entry.build(build_config(entry.config_cls, json.loads(meta["model_config"]), section="model"),
                      vocab_size=vocab, num_answers=answers, task_type=task_type)
    net.load_state_dict(load_checkpoint(ckpt)["model"])
    return net.eval()


def _answer(net, batch, rows, words, tokens) -> dict[str, str]:
    """The network's answers on ``batch`` with the questions indexed by hand from the official vocabulary."""
    index = {w: i for i, w in enumerate(words)}
    ids = [[index.get(t, 1) for t in tokens(row["question"])] for row in rows]
    batch["question"] = torch.tensor([q + [0] * (max(map(len, ids)) - len(q)) for q in ids])
    batch["question_len"] = torch.tensor([len(q) for q in ids])
    with torch.no_grad():
        return {f"frameqa-{row['key']}": ANSWERS[i]
                for row, i in zip(rows, net(batch)["logits"].argmax(-1).tolist(), strict=True)}


# ----------------------------------------------------------------------------- MSPAN
@pytest.fixture(scope="module")
def mspan_release(keyed, tmp_path_factory):
    """MSPAN's two directories, one ``<key>.npy`` per question key (as its preprocessing writes them)."""
    base = tmp_path_factory.mktemp("mspan_release")
    reader = FeatureReader(keyed.features)
    dirs = {r: base / f"tgif-qa_frameqa_{r}_feat" for r in ("appearance_pool5_4", "motion_4")}
    for d in dirs.values():
        d.mkdir()
    for row in _all_rows(keyed):
        feats = reader[row["gif_name"]]
        np.save(dirs["appearance_pool5_4"] / f"{row['key']}.npy", feats["appearance"])
        np.save(dirs["motion_4"] / f"{row['key']}.npy", feats["motion"])
    out = base / "imported"
    _import("mspan", str(base), "--out", str(out), "--dataset", "tgif", "--task", "frameqa", "--root",
            str(keyed.root), "--num-frames", "4")
    return SimpleNamespace(dirs=dirs, features=out)


def test_converted_mspan_on_imported_features_answers_as_on_the_raw_arrays(keyed, mspan_release, tmp_path):
    src, vocab, answers = _mspan_official(tmp_path, green_wins=False)
    ckpt = tmp_path / "mspan.pt"
    res = CliRunner().invoke(convert_cli(), ["mspan", str(src), "--out", str(ckpt), "--vocab", str(vocab),
                                             "--answers", str(answers)])
    assert res.exit_code == 0, res.output
    _evaluate(keyed, mspan_release.features, "mspan", ckpt, tmp_path / "eval")
    rows = _rows(keyed)
    # the official loader: np.load('<dir>/%s.npy' % video_id) with video_id the question's key
    batch = {k: torch.from_numpy(np.stack([np.load(mspan_release.dirs[d] / f"{r['key']}.npy") for r in rows]))
             for k, d in (("appearance", "appearance_pool5_4"), ("motion", "motion_4"))}
    words = json.loads(vocab.read_text())
    want = _answer(_net(ckpt, len(words), len(ANSWERS)), batch, rows, sorted(words, key=words.get),
                   lambda q: q.lower()[:-1].split())
    assert _predictions(tmp_path / "eval") == want and len(set(want.values())) > 1


def test_mspan_trains_on_imported_features(keyed, mspan_release, tmp_path):
    args = ["mspan", "--dataset", "tgif", "--task", "frameqa", "--root", str(keyed.root), "--features",
            str(mspan_release.features), "--out", str(tmp_path / "run"), "--no-progress", "--epochs", "2",
            "--batch-size", "8", *[x for item in TINY_MODEL for x in ("--set", item)]]
    res = CliRunner().invoke(train_cli(), args, catch_exceptions=False)
    assert res.exit_code == 0, res.output
    m = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert m["provenance"]["features"]["provenance"]["imported"]["format"] == "mspan"
    assert m["test"]["num_questions"] == len(_rows(keyed))
    log = (tmp_path / "run" / "train.log").read_text()
    assert "imported from mspan, features released by the authors" in log
    assert " released (mspan)" in format_report([tmp_path / "run"])


# ----------------------------------------------------------------------------- MASN
@pytest.fixture(scope="module")
def masn_release(keyed, tiny_masn_features, tmp_path_factory):
    """MASN's four files keyed by ``str(key)``: each video's real frames (the official files hold no
    padding), one GIF with two frames more than T (the import keeps the first T, as the official loader)."""
    base = tmp_path_factory.mktemp("masn_release")
    d = base / "feat_r6_vsync2"
    d.mkdir()
    reader, rng = FeatureReader(tiny_masn_features), np.random.default_rng(3)
    raws = {}
    for row in _all_rows(keyed):
        f = reader[row["gif_name"]]
        n = int(f["frame_mask"].sum())
        raw = {k: f[k][:n] for k in ("appearance", "motion", "objects", "motion_objects")}
        x1y1, wh = rng.uniform(0, 0.5, (n, MASN_OBJECTS, 2)), rng.uniform(0.1, 0.5, (n, MASN_OBJECTS, 2))
        raw["object_boxes"] = np.concatenate([x1y1, x1y1 + wh, wh], -1).astype(np.float32)  # MASN's encoding
        if row["gif_name"] == "g002":
            raw = {k: np.concatenate([v, rng.uniform(0, 1, (2, *v.shape[1:])).astype(np.float32)])
                   for k, v in raw.items()}
            raw["object_boxes"][n:] = 0  # all-zero boxes are valid [x1, y1, x2, y2, w, h]
        raws[row["key"]] = raw
    files = {"appearance": "res152_avgpool.hdf5", "motion": "tgif_i3d_hw7_perclip_avgpool.hdf5",
             "motion_objects": "tgif_i3d_roialign_hw7_perclip_avgpool_obj10.hdf5"}
    for part, name in files.items():
        with h5py.File(d / name, "w") as h:
            for key, raw in raws.items():
                h.create_dataset(key, data=raw[part])
    with h5py.File(d / "tgif_btup_f_obj10.hdf5", "w") as h:
        for key, raw in raws.items():
            h.create_dataset(f"image_features/{key}", data=raw["objects"])
            h.create_dataset(f"spatial_features/{key}", data=raw["object_boxes"])
    out = base / "imported"
    _import("masn", str(base), "--out", str(out), "--dataset", "tgif", "--task", "frameqa", "--root",
            str(keyed.root), "--max-frames", str(MASN_FRAMES), "--max-objects", str(MASN_OBJECTS))
    return SimpleNamespace(raws=raws, features=out)


def _official_batch(raws, rows) -> dict[str, torch.Tensor]:
    """MASN's loader: features by the question's key, video_pad / video_3d_pad to T, video_length."""
    out: dict[str, list] = {}
    for row in rows:
        raw = raws[row["key"]]
        n = min(len(raw["appearance"]), MASN_FRAMES)
        for k, v in raw.items():
            full = np.zeros((MASN_FRAMES, *v.shape[1:]), np.float32)
            full[:n] = v[:n]
            out.setdefault(k, []).append(full)
        out.setdefault("frame_mask", []).append(np.arange(MASN_FRAMES) < n)
    batch = {k: torch.from_numpy(np.stack(v)) for k, v in out.items()}
    batch["object_mask"] = batch["frame_mask"][:, :, None].expand(-1, -1, MASN_OBJECTS).clone()
    return batch


def test_converted_masn_on_imported_features_answers_as_on_the_raw_arrays(keyed, masn_release, tmp_path):
    ckpt = _released_masn_checkpoint(tmp_path)
    _evaluate(keyed, masn_release.features, "masn", ckpt, tmp_path / "eval")
    rows = _rows(keyed)
    want = _answer(_net(ckpt, len(MASN_WORDS), len(ANSWERS)), _official_batch(masn_release.raws, rows), rows,
                   MASN_WORDS, lambda q: q.lower().replace("?", " \\? ").split())
    assert _predictions(tmp_path / "eval") == want and len(set(want.values())) > 1
    assert any(len(masn_release.raws[r["key"]]["appearance"]) > MASN_FRAMES for r in _all_rows(keyed))


def test_masn_trains_on_imported_features(keyed, masn_release, tmp_path):
    tiny = ["model.hidden_dim=16", "model.word_dim=8", "model.position_dim=4", "model.glimpses=2"]
    args = ["masn", "--dataset", "tgif", "--task", "frameqa", "--root", str(keyed.root), "--features",
            str(masn_release.features), "--out", str(tmp_path / "run"), "--no-progress", "--epochs", "1",
            "--batch-size", "8", *[x for item in tiny for x in ("--set", item)]]
    res = CliRunner().invoke(train_cli(), args, catch_exceptions=False)
    assert res.exit_code == 0, res.output
    m = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert m["provenance"]["features"]["provenance"]["imported"]["format"] == "masn"


# ----------------------------------------------------------------------------- CMIN and vqa-answer
CMIN_OPTIONS = FeatureOptions(motion="r3d_18", motion_size=16, clip_len=4, stride=4, weights="random")
CMIN_TINY = ["model.pca_dim=4", "model.num_steps=8", "model.d_model=16", "model.word_dim=8",
             "model.num_heads=2", "model.window_widths=[2,4]", "model.freeze_embeddings=false"]


def test_cmin_trains_on_imported_c3d_and_vqa_answer_needs_features_like(tmp_path):
    rng = np.random.default_rng(0)
    ids = [f"v_{i:011d}" for i in range(10)]
    (tmp_path / "ann").mkdir()
    for name, vids in (("train.json", ids[:6]), ("val_1.json", ids[6:8]), ("val_2.json", ids[8:])):
        data = {v: {"duration": 8.0, "timestamps": [[1.0, 4.0]], "sentences": ["the red ball moves ."]}
                for v in vids}
        (tmp_path / "ann" / name).write_text(json.dumps(data))
    with h5py.File(tmp_path / "sub_activitynet_v1-3.c3d.hdf5", "w") as f:
        for v in ids:  # 512-d: the size of the stand-in extraction below (r3d_18)
            f.create_dataset(f"{v}/c3d_features", data=rng.standard_normal((6, 512)).astype(np.float32))
    _import("activitynet-c3d", str(tmp_path), "--out", str(tmp_path / "feats"), "--dataset",
            "activitynet-captions", "--root", str(tmp_path / "ann"))
    run = tmp_path / "run"
    args = ["cmin", "--dataset", "activitynet-captions", "--root", str(tmp_path / "ann"), "--features",
            str(tmp_path / "feats"), "--out", str(run), "--no-progress", "--epochs", "1", "--batch-size", "4",
            *[x for item in CMIN_TINY for x in ("--set", item)]]
    res = CliRunner().invoke(train_cli(), args, catch_exceptions=False)
    assert res.exit_code == 0, res.output
    best = run / "checkpoints" / "best.pt"
    res = CliRunner().invoke(train_cli(), [*args[:8], str(tmp_path / "eval"), "--no-progress", "--eval-only",
                                           "--checkpoint", str(best)], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    with pytest.raises(ImportedFeaturesError) as info:
        Answerer.from_checkpoint(best)
    assert str(info.value) == (
        f"{best}: trained on features imported from activitynet-c3d (sub_activitynet_v1-3.c3d.hdf5; "
        "features released by the authors), which vqa-answer cannot recompute for a new video; pass "
        "--features-like DIR, a feature directory vqa-extract made with backbones that reproduce them "
        "(docs/reproduce.md), or evaluate on imported features with vqa-train --eval-only")
    # an extraction standing in for the release (what `vqa-extract --features cmin ...` records)
    provenance = build_feature_set("cmin", CMIN_OPTIONS).provenance()
    like = write_feature_dir(tmp_path / "like", "cmin", {"x": {"clips": np.zeros((3, 512), np.float32),
                                                               "clip_times": np.zeros(3, np.float32)}},
                             provenance=provenance, ragged=("clips", "clip_times"))
    answerer = Answerer.from_checkpoint(best, features_like=like)
    assert answerer.features_note.startswith(f"features recomputed as {like} was extracted (motion=r3d_18)")
    video = write_video(tmp_path / "clip.mp4", rng.integers(0, 255, (24, 32, 32, 3), dtype=np.uint8), fps=8)
    result = answerer.answer(str(video), "the red ball moves .")
    assert len(result.moments) >= 1 and 0 <= result.moments[0][0] <= result.moments[0][1] <= 3.0 + 1e-6
