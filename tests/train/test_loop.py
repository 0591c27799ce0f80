"""The shared loop: step, hooks, non-finite loss stop, early stopping, clipping, checkpoint RNG round trip."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from torch import nn

from train.checkpoint import (
    capture_rng_state,
    checkpoint_path,
    latest_checkpoint,
    load_checkpoint,
    prune_checkpoints,
    restore_rng_state,
    save_checkpoint,
)
from train.loop import EarlyStoppingHook, EvalHook, HookBase, NonFiniteLossError, Trainer


class Linear(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 3)

    def forward(self, batch):
        return {"logits": self.fc(batch["x"])}  # (B, 3)


def _batches(n: int, *, nan_at: int | None = None, scale: float = 1.0):
    g = torch.Generator().manual_seed(0)
    out = []
    for i in range(n):
        x = torch.randn(4, 4, generator=g) * scale
        if nan_at is not None and i == nan_at:
            x[0, 0] = float("nan")
        out.append({"x": x, "answer": torch.tensor([0, 1, 2, 0])})
    return out


class Recorder(HookBase):
    def __init__(self) -> None:
        self.events: list[str] = []

    def before_train(self):
        self.events.append("before_train")

    def after_step(self):
        self.events.append(f"step{self.trainer.state.global_step}")

    def after_epoch(self):
        self.events.append(f"epoch{self.trainer.state.epoch}")

    def after_train(self):
        self.events.append("after_train")


def _trainer(loader, hooks=(), **kw):
    torch.manual_seed(0)
    model = Linear()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    return Trainer(model, opt, loader, task_type="open", device=torch.device("cpu"), hooks=hooks,
                   show_progress=False, **kw)


def test_steps_call_hooks_and_reduce_the_loss():
    rec = Recorder()
    tr = _trainer(_batches(3), hooks=[rec])
    first = tr.run_step(_batches(1)[0])["loss"]
    state = tr.train(4)
    assert state.epoch == 4 and state.global_step == 12
    assert rec.events[:5] == ["before_train", "step1", "step2", "step3", "epoch1"]
    assert rec.events[-1] == "after_train"
    assert state.last_train["loss"] < first


def test_non_finite_loss_stops_naming_the_step():
    tr = _trainer(_batches(4, nan_at=2))
    with pytest.raises(NonFiniteLossError, match=r"non-finite loss at epoch 1, step 3 \(global step 3\)"):
        tr.train(2)


def test_gradient_clipping():
    tr = _trainer(_batches(1, scale=1e4), grad_clip=0.01)
    tr.run_step(_batches(1, scale=1e4)[0])
    norm = torch.norm(torch.stack([p.grad.norm() for p in tr.model.parameters()]))
    assert norm.item() <= 0.01 + 1e-6


def test_model_selection_and_early_stopping():
    values = iter([0.5, 0.4, 0.6, 0.3, 0.2, 0.9, 0.9])
    hooks = [
        EvalHook(lambda: {"accuracy": next(values)}, metric="accuracy", mode="max"),
        EarlyStoppingHook(2),
    ]
    state = _trainer(_batches(1), hooks=hooks).train(10)
    assert state.stop and state.epoch == 5  # epochs 4 and 5 did not improve on epoch 3
    assert state.best_epoch == 3 and state.best_metric == 0.6
    mse = iter([3.0, 2.0, 2.5])
    hooks = [EvalHook(lambda: {"mse": next(mse)}, metric="mse", mode="min")]
    state = _trainer(_batches(1), hooks=hooks).train(3)
    assert state.best_epoch == 2 and state.best_metric == 2.0 and not state.stop


def test_checkpoint_round_trip_with_rng(tmp_path):
    torch.manual_seed(1)
    np.random.seed(2)
    random.seed(3)
    np.random.standard_normal()  # leaves a cached Gaussian in NumPy's state
    model = Linear()
    state = {"model": model.state_dict(), "rng": [capture_rng_state()], "epoch": 3, "meta": {"vocab": ["a"]}}
    path = checkpoint_path(tmp_path, 3)
    save_checkpoint(path, state)

    def draw():
        py = [random.random() for _ in range(3)]
        return torch.rand(3), np.random.rand(3), py, np.random.standard_normal()

    want = draw()
    loaded = load_checkpoint(path)  # weights_only=True
    restore_rng_state(loaded["rng"][0])
    got = draw()
    assert torch.equal(want[0], got[0]) and np.array_equal(want[1], got[1])
    assert want[2] == got[2] and want[3] == got[3]
    assert loaded["epoch"] == 3 and loaded["meta"] == {"vocab": ["a"]}
    assert torch.equal(loaded["model"]["fc.weight"], model.fc.weight)
    assert [p.name for p in tmp_path.iterdir()] == ["epoch-0003.pt"]  # no temporary left behind
    save_checkpoint(checkpoint_path(tmp_path, 4), state)
    prune_checkpoints(tmp_path, keep=1)
    assert latest_checkpoint(tmp_path).name == "epoch-0004.pt" and len(list(tmp_path.iterdir())) == 1
