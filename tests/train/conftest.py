"""Shared fixtures of the training tests: a tiny learnable TGIF-QA dataset and its MSPAN features.

``tiny_tgif`` (session scoped) writes, under one temporary directory:

- ``root/dataset/{Train,Test}_{frameqa,action,count}_question.csv``: real TGIF-QA CSVs (TAB-separated,
  official headers) read through the ``tgif`` adapter and ``prepare_qa``; the GIFs themselves are not
  needed for training;
- ``features/``: an ``mspan`` feature directory written with ``extract.reader.write_feature_dir``:
  ``appearance`` and ``motion`` of shape (4, 8) per video.

Video ``g{i}`` has colour class ``i % 4`` (written into ``appearance``) and a count ``1 + i % 5``
(the scale of ``motion``), so FrameQA colours, Action candidates and counts are learnable from the
features. ``TINY_MODEL`` are ``--set`` items that make MSPAN small enough for CPU tests.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from extract.reader import write_feature_dir

COLOURS = ("red", "blue", "green", "yellow")
ACTIONS = ("jump", "run", "wave", "spin")
NUM_VIDEOS = 26
NUM_TRAIN_VIDEOS = 18  # 36 Train rows: 4 held out for val by the adapter, 32 train (even, for DDP)
N_FRAMES, DIM = 4, 8

TINY_MODEL = (
    "model.node_dim=16",
    "model.hidden_dim=16",
    "model.word_dim=8",
    "model.lstm_layers=1",
    "model.num_scales=2",
    "model.iterations=1",
    "model.dropout=0.0",
    "model.readout_dropout=0.0",
)


@dataclass(frozen=True)
class TinyData:
    root: Path
    features: Path
    base: Path


def _features(i: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    colour, count = i % 4, 1 + i % 5
    app = 0.1 * rng.standard_normal((N_FRAMES, DIM)).astype(np.float32)
    app[:, colour] += 1.0
    mot = 0.1 * rng.standard_normal((N_FRAMES, DIM)).astype(np.float32)
    mot[:, 4 + colour] += 1.0
    mot[:, 0] += count
    return {"appearance": app, "motion": mot}


def _write_tsv(path: Path, header: list[str], rows: list[list[str]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = ["\t".join(header)] + ["\t".join(map(str, r)) for r in rows]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def write_tgif_csvs(root: Path, videos: list[int], *, split: str, seed: int) -> None:
    """Write Train/Test CSVs for frameqa, action and count over ``videos`` (two rows per video)."""
    rng = np.random.default_rng(seed)
    fq, act, cnt = [], [], []
    for rep in range(2):
        for i in videos:
            gif = f"g{i:03d}"
            key = f"{split}{rep}{i}"
            colour = COLOURS[i % 4]
            fq.append([gif, "what color is the ball ?" if rep else "what is the color of the ball ?",
                       colour, 2, i, key, "desc"])
            cands = list(ACTIONS) + ["sit"]
            rng.shuffle(cands)
            right = ACTIONS[i % 4]
            act.append([gif, "what does the person do ?", *cands, cands.index(right), i, key])
            cnt.append([gif, "how many times does the man nod ?", 1 + i % 5, i, key])
    d = root / "dataset"
    _write_tsv(d / f"{split}_frameqa_question.csv",
               ["gif_name", "question", "answer", "type", "vid_id", "key", "description"], fq)
    _write_tsv(d / f"{split}_action_question.csv",
               ["gif_name", "question", "a1", "a2", "a3", "a4", "a5", "answer", "vid_id", "key"], act)
    _write_tsv(d / f"{split}_count_question.csv", ["gif_name", "question", "answer", "vid_id", "key"], cnt)


@pytest.fixture(scope="session")
def tiny_tgif(tmp_path_factory: pytest.TempPathFactory) -> TinyData:
    base = tmp_path_factory.mktemp("tiny_tgif")
    root = base / "tgif"
    write_tgif_csvs(root, list(range(NUM_TRAIN_VIDEOS)), split="Train", seed=0)
    write_tgif_csvs(root, list(range(NUM_TRAIN_VIDEOS, NUM_VIDEOS)), split="Test", seed=1)
    rng = np.random.default_rng(0)
    items = {f"g{i:03d}": _features(i, rng) for i in range(NUM_VIDEOS)}
    features = write_feature_dir(base / "features", "mspan", items, provenance={"weights": "synthetic"},
                                 shard_size=10)
    return TinyData(root=root, features=Path(features), base=base)


MASN_FRAMES, MASN_OBJECTS = 4, 3


def masn_features(i: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """``masn``-layout features of video ``g{i}`` carrying the same learnable signal as ``_features``.

    The colour sits in the object rows (appearance RoIs), the count in the global motion; the last frame
    of every other video and one object row per frame are padding (zeros, mask False).
    """
    base = _features(i, rng)
    T, M = MASN_FRAMES, MASN_OBJECTS
    frame_mask = np.ones(T, bool)
    frame_mask[T - 1] = i % 2 == 0
    object_mask = np.ones((T, M), bool)
    object_mask[:, M - 1] = False
    object_mask &= frame_mask[:, None]
    objects = 0.1 * rng.standard_normal((T, M, DIM)).astype(np.float32) + base["appearance"][:, None]
    motion_objects = 0.1 * rng.standard_normal((T, M, DIM)).astype(np.float32) + base["motion"][:, None]
    boxes = rng.uniform(0, 1, (T, M, 6)).astype(np.float32)
    out = {
        "appearance": base["appearance"] * frame_mask[:, None],
        "motion": base["motion"] * frame_mask[:, None],
        "objects": objects * object_mask[..., None],
        "object_boxes": boxes * object_mask[..., None],
        "motion_objects": motion_objects * object_mask[..., None],
        "frame_mask": frame_mask,
        "object_mask": object_mask,
    }
    return {k: np.ascontiguousarray(v) for k, v in out.items()}


@pytest.fixture(scope="session")
def tiny_masn_features(tiny_tgif: TinyData) -> Path:
    """A ``masn`` feature directory for the videos of ``tiny_tgif``."""
    rng = np.random.default_rng(1)
    items = {f"g{i:03d}": masn_features(i, rng) for i in range(NUM_VIDEOS)}
    return Path(write_feature_dir(tiny_tgif.base / "masn_features", "masn", items,
                                  provenance={"weights": "synthetic"}, shard_size=10))
