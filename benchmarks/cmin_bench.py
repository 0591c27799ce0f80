"""CMIN's inputs for ``benchmarks/train_bench.py --model cmin``: ours, and the official model beside it.

One training step = forward + loss + backward + optimizer step on one random batch: T = 200 steps of
500-d (PCA) clip features, queries of 20 words (GloVe-300, fixed), 2 self-attention layers with 4 heads,
2 syntactic GCN layers over 40 dependency labels, d = 512, the 7 ActivityNet window widths (1400
candidates), batch 64. Ours trains with AdamW (lr 8e-4, weight decay 1e-7: the official run's values).

The official step (ikuinen/CMIN_moment_retrieval: ``models_.gcn_final.Model``, its ``AdamOptimizer`` and
``InverseSquareRootSchedule``, configured by its own ``main.parse_args`` with the README's ActivityNet
arguments) runs on random inputs of the same sizes. Its code is imported from the clone as it is; three
problems of it under torch 2.14 on a CPU are worked around in this process, while it runs:

1. ``main.py`` imports ``optim.lr_scheduler``, a package that does not exist (it is ``optimizer``): the
   ``optim`` names are registered in ``sys.modules`` as aliases of the ``optimizer`` modules;
2. its multi-head attention scales ``q`` in place (``q *= self.scaling``) where ``q`` is one of the views
   ``chunk`` returns, which autograd refuses in every training step: its ``in_proj_qkv`` is wrapped so
   that it returns ``q`` as a copy (the other projections return fresh tensors already);
3. it moves masks to CUDA in ``forward``: ``Tensor.cuda`` returns the tensor itself during a CPU step.

Its imports of ``fairseq`` (only ``utils.softmax``), ``nltk`` and ``gensim`` (data loading only) are
stubbed while it is imported when those packages are missing.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import sys
import types
from collections.abc import Iterator

import torch
import torch.nn.functional as F

from models import get_model

T, D_IN, L = 200, 500, 20

#: the README's ActivityNet training command (its data paths left out: nothing is read)
OFFICIAL_ARGS = ["--dataset", "ActivityNet", "--dropout", "0.2", "--warmup-updates", "300",
                 "--warmup-init-lr", "1e-06", "--lr", "8e-4", "--num-heads", "4", "--num-gcn-layers", "2",
                 "--num-attn-layers", "2", "--weight-decay", "1e-7"]  # fmt: skip


def setting(batch_size: int) -> str:
    return (f"CMIN train step (fwd+loss+bwd+optimizer), T={T} steps x {D_IN}-d, {L} words, 7 widths (1400 "
            f"windows), d=512, 4 heads, 2 attn + 2 GCN layers, batch {batch_size}")


def _ours_batch(batch_size: int, cfg, g: torch.Generator) -> dict:
    """A random moment batch of the official sizes (dependency trees of random heads and labels)."""
    lens = torch.randint(6, L + 1, (batch_size,), generator=g)
    question = torch.randint(2, 5000, (batch_size, L), generator=g) * (torch.arange(L) < lens[:, None])
    edges = torch.zeros(batch_size, L, L, dtype=torch.int64)
    for b in range(batch_size):  # a random tree: every word but the first hangs off an earlier one
        n = int(lens[b])
        heads = [int(torch.randint(0, i, (1,), generator=g)) for i in range(1, n)]
        for dep, head in enumerate(heads, start=1):
            edges[b, head, dep] = int(torch.randint(1, cfg.num_dep_labels, (1,), generator=g))
    start = torch.rand(batch_size, generator=g) * 60
    return {
        "question": question, "question_len": lens, "edges": edges,
        "clips": torch.randn(batch_size, T, cfg.video_dim, generator=g),
        "clips_mask": torch.ones(batch_size, T, dtype=torch.bool),
        "duration": torch.full((batch_size,), 120.0),
        "moment": torch.stack([start, start + 10 + torch.rand(batch_size, generator=g) * 40], 1),
    }


def ours_inputs(batch_size: int, device: str) -> tuple[object, dict]:
    """Our config (PCA-500 clips; the official run's concat fusion, the default) and a batch on ``device``."""
    cfg = get_model("cmin").config_cls(video_dim=D_IN)
    batch = _ours_batch(batch_size, cfg, torch.Generator().manual_seed(0))
    return cfg, {k: v.to(device) for k, v in batch.items()}


def _official_inputs(batch_size: int, n_prop: int, device: str) -> dict:
    g = torch.Generator().manual_seed(0)
    lens = torch.randint(6, L + 1, (batch_size,), generator=g)
    word_mask = (torch.arange(L) < lens[:, None]).to(torch.uint8)
    sparse = torch.rand(batch_size, L, L, generator=g) < 0.05
    adj = torch.randint(2, 41, (batch_size, L, L), generator=g) * sparse + torch.eye(L, dtype=torch.int64)
    start = torch.randint(0, 150, (batch_size,), generator=g)
    inputs = {
        "frames": torch.randn(batch_size, T, D_IN, generator=g),
        "frame_mask": torch.ones(batch_size, T, dtype=torch.uint8),
        "words": torch.randn(batch_size, L, 300, generator=g) * word_mask[..., None],
        "word_mask": word_mask, "label": torch.rand(batch_size, n_prop, generator=g),
        "label_mask": torch.ones(batch_size, n_prop, dtype=torch.uint8),
        "gt": torch.stack([start, start + 20], 1), "node_pos": torch.arange(L).repeat(batch_size, 1),
        "node_mask": word_mask, "adj_mat": adj * word_mask[:, :, None] * word_mask[:, None, :],
    }
    return {k: v.to(device) for k, v in inputs.items()}


@contextlib.contextmanager
def _stubs_for_missing() -> Iterator[None]:
    """``fairseq`` (its ``utils.softmax``), ``nltk`` and ``gensim`` stand-ins while they are imported, where
    those packages are not installed."""
    missing = {root for root in ("nltk", "gensim", "fairseq")
               if root not in sys.modules and importlib.util.find_spec(root) is None}  # fmt: skip
    added = []
    for name in ("nltk", "gensim", "gensim.models", "fairseq"):
        if name.split(".")[0] not in missing:
            continue
        stub = types.ModuleType(name)
        stub.KeyedVectors = None
        stub.utils = types.SimpleNamespace(softmax=lambda x, dim, onnx_trace=False: F.softmax(x.float(), dim))
        sys.modules[name] = stub
        added.append(name)
    try:
        yield
    finally:
        for name in added:
            del sys.modules[name]


def _alias_optim() -> None:
    """Workaround 1: ``optim.*`` names for the ``optimizer.*`` modules (imported from the clone)."""
    importlib.import_module("optimizer.lr_scheduler")  # imports every scheduler module of the package
    for name, module in list(sys.modules.items()):
        if name == "optimizer" or name.startswith("optimizer."):
            sys.modules["optim" + name[len("optimizer"):]] = module


def _copy_q_of_qkv(attention_cls: type) -> None:
    """Workaround 2: ``q`` leaves ``in_proj_qkv`` as a tensor of its own, so ``q *= scaling`` is allowed."""
    original = attention_cls.in_proj_qkv

    def in_proj_qkv(self, query):
        q, k, v = original(self, query)
        return q.clone(), k, v

    attention_cls.in_proj_qkv = in_proj_qkv


def official_contender(batch_size: int, device: str):
    """The official model's step, imported from the clone on ``sys.path`` (``train_bench.official_code``).

    Returns:
        a ``train_bench.Contender`` whose step runs under the autocast it is given.
    """
    from train_bench import Contender, cuda_moves_are_noops, official_step

    with _stubs_for_missing():
        _alias_optim()
        main = importlib.import_module("main")
        _copy_q_of_qkv(importlib.import_module("modules_.multihead_attention").MultiHeadAttention)
        model_cls = importlib.import_module("models_.gcn_final").Model
        anchors = importlib.import_module("utils").generate_anchors
        adam = importlib.import_module("optimizer.adam_optimizer").AdamOptimizer
        schedule = importlib.import_module("optimizer.lr_scheduler.inverse_square_root_schedule")
    saved, sys.argv = sys.argv, ["main.py", *OFFICIAL_ARGS]
    try:
        args = main.parse_args()
    finally:
        sys.argv = saved
    args.max_num_frames, args.frame_dim, args.batch_size = T, D_IN, batch_size
    torch.manual_seed(0)
    with cuda_moves_are_noops(not device.startswith("cuda")):
        model = model_cls(args).to(device).train()
    opt = adam(args, list(model.parameters()))
    lr = schedule.InverseSquareRootSchedule(args, opt)
    inputs = _official_inputs(batch_size, T * len(anchors(args.dataset)), device)
    updates = [0]

    def step_and_schedule() -> None:  # its runner's order: step, then the schedule's per-update rate
        opt.step()
        updates[0] += 1
        lr.step_update(updates[0])

    def loss_of() -> torch.Tensor:
        return model(**inputs)[1].mean().float()  # its runner: torch.mean of the loss

    runner_optimizer = types.SimpleNamespace(zero_grad=opt.zero_grad, step=step_and_schedule)
    return Contender("official", model, official_step(model, loss_of, runner_optimizer, device))
