"""The model registry: lookups, entries, and every registered model on tiny inputs."""

from __future__ import annotations

import dataclasses

import pytest
import torch

import models
from models import MODELS, ModelEntry, get_model

# Tiny settings per registered model so the loop below runs in well under a second per model.
TINY = {
    "mspan": {"num_frames": 6, "appearance_dim": 8, "motion_dim": 6, "node_dim": 16, "hidden_dim": 8,
              "word_dim": 4, "lstm_layers": 1, "num_scales": 3, "iterations": 1},
    "siasamrea": {"frames_dim": 8, "hidden_dim": 8, "num_heads": 2, "num_layers": 1, "word_dim": 4,
                  "clip_frames": 3, "num_siamese": 2, "affinity_dim": 4},
    "cmin": {"video_dim": 8, "d_model": 8, "word_dim": 4, "num_heads": 2, "window_widths": (2, 3)},
    "masn": {"num_frames": 6, "appearance_dim": 8, "motion_dim": 6, "hidden_dim": 8, "word_dim": 4,
             "position_dim": 4, "glimpses": 2},
}
OUTPUT_KEY = {"open": "logits", "mc": "scores", "count": "count", "moment": "window_scores"}
FEATURE_DIMS = {"appearance": "appearance_dim", "motion": "motion_dim", "clips": "video_dim"}
# per-frame shapes of features that are not (T, <name>_dim): name -> (trailing shape, dtype)
OBJECTS = 3
OTHER_FEATURES = {
    "objects": lambda cfg: ((OBJECTS, cfg.appearance_dim), torch.float32),
    "motion_objects": lambda cfg: ((OBJECTS, cfg.motion_dim), torch.float32),
    "object_boxes": lambda cfg: ((OBJECTS, 6), torch.float32),
    "frame_mask": lambda cfg: ((), torch.bool),
    "object_mask": lambda cfg: ((OBJECTS,), torch.bool),
}


def test_registry_lists_mspan():
    assert "mspan" in MODELS
    entry = get_model("mspan")
    assert entry is MODELS["mspan"] and entry.name == "mspan"
    assert entry.feature_set == "mspan"
    assert set(entry.task_types) == {"open", "mc", "count"}
    assert entry.feature_keys == ("appearance", "motion")
    assert dataclasses.is_dataclass(entry.config_cls)


def test_unknown_model_lists_the_names():
    with pytest.raises(KeyError, match=r"unknown model 'nope'.*mspan"):
        get_model("nope")


def test_registry_rejects_duplicates():
    entry = MODELS["mspan"]
    with pytest.raises(ValueError, match="registered twice"):
        models._registry(entry, ModelEntry("mspan", entry.config_cls, entry.build))


def test_every_entry_is_consistent():
    for name, entry in MODELS.items():
        assert entry.name == name
        assert set(entry.task_types) <= set(OUTPUT_KEY)
        assert name in TINY, f"add tiny settings for {name!r} to this test"
        cfg = entry.config_cls()
        with pytest.raises(dataclasses.FrozenInstanceError):
            cfg.num_frames = 3  # configs are frozen


@pytest.mark.parametrize("name", sorted(MODELS))
def test_every_model_builds_and_runs_each_task_type(name):
    entry = get_model(name)
    cfg = dataclasses.replace(entry.config_cls(), **TINY[name])
    b, c = 2, 3
    batch = {
        "question": torch.tensor([[2, 3, 4], [5, 0, 0]]),
        "question_len": torch.tensor([3, 1]),
        "candidates": torch.randint(1, 9, (b, c, 2)),
        "candidates_len": torch.full((b, c), 2),
    }
    steps = getattr(cfg, "num_frames", 6)
    for key in entry.feature_keys:
        if key.endswith("_times"):  # seconds of each frame (siasamrea)
            batch[key] = torch.arange(steps).float().expand(b, -1) / 4
        elif key in OTHER_FEATURES:  # masn: objects, boxes, masks
            shape, dtype = OTHER_FEATURES[key](cfg)
            batch[key] = torch.ones(b, steps, *shape, dtype=dtype) if dtype == torch.bool else (
                torch.rand(b, steps, *shape))
        else:  # convention: feature <key> has size cfg.<key>_dim
            batch[key] = torch.randn(b, steps, getattr(cfg, FEATURE_DIMS.get(key, f"{key}_dim")))
    batch["edges"] = torch.zeros(b, 3, 3, dtype=torch.int64)  # moment retrieval: dependency edges
    for task in entry.task_types:
        torch.manual_seed(0)
        model = entry.build(cfg, vocab_size=10, num_answers=4, task_type=task, embeddings=None)
        assert isinstance(model, torch.nn.Module)
        out = model(batch)
        expected = {"open": (b, 4), "mc": (b, c), "count": (b,), "moment": (b, steps * 2)}[task]
        # exactly one prediction key; other keys are documented extras (e.g. MSPAN's attention weights)
        assert [k for k in out if k in OUTPUT_KEY.values()] == [OUTPUT_KEY[task]]
        assert out[OUTPUT_KEY[task]].shape == expected
        assert not any(isinstance(v, torch.Tensor) and v.requires_grad for v in batch.values())
