"""Adding a model (docs/architecture.md, "Adding a model"): a toy model defined here joins through exactly
the documented files' two registries, ``models.MODELS`` and ``train.recipes.RECIPES``, and is trained,
evaluated and explained by the ordinary commands; no shared module branches on a model's name."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from click.testing import CliRunner
from PIL import Image
from torch import nn

import models
import train.recipes
from models import MODELS, ModelEntry
from train.cli import build_cli
from train.recipes import RECIPES, ExplainView, Recipe
from train.tools.answer import Answer
from train.tools.explain import VIEWS, render_explanation

ROOT = Path(__file__).resolve().parents[2]


# -- models/toy.py: config, model, builder ------------------------------------------------------------
@dataclass(frozen=True)
class ToyConfig:
    """A pooled-features classifier (the test's fifth model)."""

    appearance_dim: int = 0  # filled from the features
    motion_dim: int = 0
    num_frames: int = 0
    hidden_dim: int = 16

    def __post_init__(self) -> None:
        if self.hidden_dim < 1:
            raise ValueError("hidden_dim must be >= 1")


class Toy(nn.Module):
    """Frame attention over ``[appearance; motion]``, then a linear answer head (open-ended)."""

    def __init__(self, cfg: ToyConfig, num_answers: int) -> None:
        super().__init__()
        d = cfg.appearance_dim + cfg.motion_dim
        self.score = nn.Linear(d, 1)
        self.head = nn.Sequential(nn.Linear(d, cfg.hidden_dim), nn.ReLU(),
                                  nn.Linear(cfg.hidden_dim, num_answers))

    def forward(self, batch: dict) -> dict:
        x = torch.cat([batch["appearance"], batch["motion"]], -1)  # (B, T, D)
        w = torch.softmax(self.score(x).squeeze(-1), -1)  # (B, T)
        return {"logits": self.head((w.unsqueeze(-1) * x).sum(1)), "frame_weights": w.detach()}


def toy(cfg: ToyConfig, *, vocab_size: int, num_answers: int, task_type: str, embeddings=None) -> Toy:
    if not isinstance(cfg, ToyConfig):
        raise TypeError(f"toy() takes a ToyConfig, got {type(cfg).__name__}")
    return Toy(cfg, num_answers)


# -- the two registry lines (models.MODELS, train.recipes.RECIPES) and train/recipes/toy.py ----------------
ENTRY = ModelEntry(name="toy", config_cls=ToyConfig, build=toy, feature_set="mspan", task_types=("open",),
                   feature_keys=("appearance", "motion"))
RECIPE = Recipe(name="toy", grad_clip=3.0, amp="fp32",
                train_defaults=lambda dataset, task, task_type: {"batch_size": 8, "lr": 1e-2, "epochs": 10},
                model_defaults=lambda dataset, task, task_type: {"hidden_dim": 24},
                explain=ExplainView("frame_attention", attention_key="frame_weights"))


@pytest.fixture
def fifth_model(monkeypatch):
    monkeypatch.setitem(MODELS, "toy", ENTRY)
    monkeypatch.setitem(RECIPES, "toy", RECIPE)
    assert models.MODELS is MODELS and train.recipes.RECIPES is RECIPES


def _train(data, out: Path, *extra: str):
    args = ["toy", "--dataset", "tgif", "--task", "frameqa", "--root", str(data.root), "--features",
            str(data.features), "--out", str(out), "--no-progress", *extra]
    return CliRunner().invoke(build_cli(), args)


def test_a_fifth_model_trains_evaluates_and_explains(fifth_model, tiny_tgif, tmp_path):
    listing = CliRunner().invoke(build_cli(), ["--help"]).output
    assert "toy" in listing and "train.lr" in CliRunner().invoke(build_cli(), ["toy", "--help"]).output

    out = tmp_path / "run"
    res = _train(tiny_tgif, out)
    assert res.exit_code == 0, res.output
    conf = yaml.safe_load((out / "config.yaml").read_text())
    assert conf["model_name"] == "toy"  # its recipe's defaults reached the run, below --set
    assert (conf["train"]["grad_clip"], conf["train"]["batch_size"], conf["train"]["epochs"]) == (3.0, 8, 10)
    assert conf["model"] == {"appearance_dim": 8, "motion_dim": 8, "num_frames": 4, "hidden_dim": 24}
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["val"]["accuracy"] == 1.0 and metrics["test"]["accuracy"] >= 0.5  # 4 colours: chance 0.25
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 10

    ev = tmp_path / "eval"
    res = _train(tiny_tgif, ev, "--eval-only", "--checkpoint", str(out / "checkpoints" / "best.pt"))
    assert res.exit_code == 0, res.output
    again = json.loads((ev / "metrics.json").read_text())
    assert again["test"]["accuracy"] == metrics["test"]["accuracy"]
    res = _train(tiny_tgif, tmp_path / "e2", "--eval-only", "--checkpoint",
                 str(out / "checkpoints" / "best.pt"), "--set", "model.hidden_dim=5")
    assert res.exit_code == 2 and "drop the settings (model.hidden_dim)" in res.output  # nothing may be set

    # --explain: the recipe's view, with its attention entry, dims the frames it attended to less
    frames = np.full((4, 16, 16, 3), 200, np.uint8)
    meta = {"model_name": "toy", "dataset": "tgif", "task": "frameqa"}
    answerer = type("A", (), {"meta": meta, "random_weights": False})()
    shown = Answer("v.mp4", "what color ?", "open", frames=frames, answers=[("red", 0.9)])
    shown.attention = {"frame_weights": np.array([0.1, 0.7, 0.1, 0.1])}
    plain = Answer("v.mp4", "what color ?", "open", frames=frames, answers=[("red", 0.9)])
    a = np.asarray(Image.open(render_explanation(shown, answerer, tmp_path / "a.png")).convert("RGB"))
    b = np.asarray(Image.open(render_explanation(plain, answerer, tmp_path / "b.png")).convert("RGB"))
    assert a.shape != b.shape or (a != b).any()
    assert RECIPE.explain.view in VIEWS


def test_every_model_has_a_recipe_and_every_recipe_a_model():
    assert list(RECIPES) == list(MODELS)
    assert all(name == recipe.name for name, recipe in RECIPES.items())


def test_the_trainer_never_imports_the_tools():
    code = ("import sys, train.cli, train.runner, train.recipes, train.config, train.text_encoder; "
            "print(sorted(m for m in sys.modules if m.startswith('train.tools')))")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True,
                          env={"PYTHONPATH": str(ROOT), "PATH": ""})
    assert done.stdout.strip() == "[]"


def _name_branches(path: Path, names: set[str], *, tables: bool) -> list[str]:
    """``x == "mspan"``-like comparisons (and, with ``tables``, dicts keyed by model names) in a file."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Compare):
            sides = [node.left, *node.comparators]
            consts = [e for s in sides
                      for e in ([s] if isinstance(s, ast.Constant) else getattr(s, "elts", []))]
            if any(isinstance(c, ast.Constant) and c.value in names for c in consts):
                found.append(f"{path}:{node.lineno}")
        if tables and isinstance(node, ast.Dict):
            if any(isinstance(k, ast.Constant) and k.value in names for k in node.keys):
                found.append(f"{path}:{node.lineno} (a table keyed by model names)")
    return found


def test_no_shared_module_branches_on_a_models_name():
    names = set(MODELS)
    found = []
    for part in ("train", "extract", "pipelines"):
        for path in sorted((ROOT / part).rglob("*.py")):
            if "recipes" in path.relative_to(ROOT).parts:
                continue
            found += _name_branches(path, names, tables=part == "train")
    assert found == [], "model-name branches outside train/recipes/ and models/: " + ", ".join(found)
