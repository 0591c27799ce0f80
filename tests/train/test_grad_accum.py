"""Gradient accumulation (``train.grad_accum``): N micro-batches of B/N make the optimiser step of one
batch of B, with clipping and a per-step schedule; a run with it resumes exactly and records it."""

from __future__ import annotations

import json

import pytest
import torch
import yaml
from click.testing import CliRunner
from torch import nn

from train.cli import build_cli
from train.loop import LRSchedulerHook, Trainer

N_QUESTIONS = 22  # batches of 8 leave a last batch of 6: the last step has fewer micro-batches


class Toy(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(6, 16), nn.Linear(16, 5)

    def forward(self, batch):
        return {"logits": self.fc2(torch.tanh(self.fc1(batch["x"])))}  # (B, 5)


def _data():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(N_QUESTIONS, 6, generator=g) * 3
    return x, torch.randint(0, 5, (N_QUESTIONS,), generator=g)


def _loader(size: int):
    x, y = _data()
    return [{"qid": [f"q{i}" for i in range(s, min(s + size, N_QUESTIONS))], "x": x[s:s + size],
             "answer": y[s:s + size]} for s in range(0, N_QUESTIONS, size)]


def _train(micro: int, accum: int, epochs: int = 3):
    torch.manual_seed(0)
    model = Toy()
    opt = torch.optim.Adam(model.parameters(), lr=0.05)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 1.0 / (1 + step))  # steps per update
    tr = Trainer(model, opt, _loader(micro), task_type="open", device=torch.device("cpu"), grad_clip=0.05,
                 hooks=[LRSchedulerHook(sched, per_step=True)], show_progress=False, grad_accum=accum)
    state = tr.train(epochs)
    return model, state, sched


@pytest.mark.parametrize(("micro", "accum"), [(4, 2), (2, 4), (1, 8)])
def test_micro_batches_make_the_step_of_one_batch(micro, accum):
    want_model, want, want_sched = _train(8, 1)
    got_model, got, got_sched = _train(micro, accum)
    assert got.global_step == want.global_step == 9  # optimiser steps (3 a epoch), not micro-batches
    assert got_sched.last_epoch == want_sched.last_epoch == 9
    for (name, a), b in zip(want_model.state_dict().items(), got_model.state_dict().values(), strict=True):
        torch.testing.assert_close(b, a, rtol=0, atol=2e-6, msg=name)
    assert got.last_train.keys() == want.last_train.keys()
    for k in want.last_train:
        assert got.last_train[k] == pytest.approx(want.last_train[k], abs=1e-6), k
    # the check has teeth: unweighted micro-batch losses (each micro-batch's mean at full weight) differ
    assert not torch.allclose(want_model.fc2.weight, _train(4, 1)[0].fc2.weight, atol=1e-3)


def test_clipping_sees_the_accumulated_gradient():
    """The norm is clipped once, on the step's gradient, not on each micro-batch's."""
    x, y = _data()
    torch.manual_seed(0)
    model = Toy()
    tr = Trainer(model, torch.optim.SGD(model.parameters(), lr=0.0), [], task_type="open",
                 device=torch.device("cpu"), grad_clip=1e-3, show_progress=False, grad_accum=2)
    tr.run_step([{"qid": ["a"] * 4, "x": x[:4], "answer": y[:4]}, {"qid": ["b"] * 4, "x": x[4:8],
                                                                     "answer": y[4:8]}])
    got = torch.cat([p.grad.flatten() for p in model.parameters()])
    model.zero_grad()
    full = nn.functional.cross_entropy(model({"x": x[:8]})["logits"], y[:8])
    full.backward()
    want = torch.cat([p.grad.flatten() for p in model.parameters()])
    want = want * (1e-3 / (want.norm() + 1e-6))
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-9)


def test_grad_accum_must_divide_the_batch():
    from train.config import ConfigError, TrainConfig

    with pytest.raises(ConfigError, match=r"train.grad_accum=3 is invalid: train.batch_size=8 must be div"):
        TrainConfig(batch_size=8, grad_accum=3)


# ------------------------------------------------------------------ through vqa-train (MSPAN, tiny)
TINY = ["--set", "model.node_dim=16", "--set", "model.hidden_dim=16", "--set", "model.word_dim=8",
        "--set", "model.lstm_layers=1", "--set", "model.num_scales=2", "--set", "model.iterations=1",
        "--set", "model.dropout=0.0", "--set", "model.readout_dropout=0.0", "--set", "train.scheduler=step",
        "--set", "train.step_size=1", "--set", "train.lr=0.1", "--set", "train.optimizer=sgd",
        "--set", "train.grad_clip=0.5",
        "--batch-size", "8"]


def _run(data, out, *extra):
    # SGD: Adam divides by the root of the squared gradients, which turns rounding noise in near-zero
    # gradients into steps of lr size. Action (multiple choice): MSPAN's open-ended and count decoders
    # hold a BatchNorm, which sees the micro-batch; the multiple-choice head has none, so the comparison
    # is one of pure accumulation.
    args = ["mspan", "--dataset", "tgif", "--task", "action", "--root", str(data.root), "--features",
            str(data.features), "--out", str(out), "--no-progress", *TINY, *extra]
    res = CliRunner().invoke(build_cli(), args, catch_exceptions=False)
    assert res.exit_code == 0, res.output
    return json.loads((out / "metrics.json").read_text())


def _ckpt(out, epoch):
    return torch.load(out / "checkpoints" / f"epoch-{epoch:04d}.pt", weights_only=True)


def test_vqa_train_with_grad_accum_equals_one_batch_and_resumes_exactly(tiny_tgif, tmp_path):
    one, acc, part = tmp_path / "one", tmp_path / "acc", tmp_path / "part"
    _run(tiny_tgif, one, "--epochs", "2")
    want = _run(tiny_tgif, acc, "--epochs", "2", "--set", "train.grad_accum=4")
    assert yaml.safe_load((acc / "config.yaml").read_text())["train"]["grad_accum"] == 4
    assert "4 micro-batches of 2 questions" in (acc / "train.log").read_text()
    a, b = _ckpt(one, 2), _ckpt(acc, 2)
    assert a["state"]["global_step"] == b["state"]["global_step"] == 8  # 32 questions / 8 per step, 2 epochs
    for k in a["model"]:
        torch.testing.assert_close(b["model"][k], a["model"][k], rtol=0, atol=1e-5, msg=k)

    _run(tiny_tgif, part, "--epochs", "1", "--set", "train.grad_accum=4")  # "interrupted" after epoch 1
    first = _ckpt(part, 1)["model"]
    assert max(float((first[k] - b["model"][k]).abs().max()) for k in first) > 1e-2  # epoch 2 moved it
    got = _run(tiny_tgif, part, "--epochs", "2", "--set", "train.grad_accum=4", "--resume")
    for key in ("val", "test", "best_epoch"):
        assert got[key] == want[key], key
    c = _ckpt(part, 2)
    for k in b["model"]:
        assert torch.equal(c["model"][k], b["model"][k]), k
    assert c["state"] == b["state"] and c["scheduler"] == b["scheduler"]
    assert (part / "predictions_test.jsonl").read_text() == (acc / "predictions_test.jsonl").read_text()
