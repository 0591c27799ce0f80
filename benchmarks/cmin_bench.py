"""CMIN training throughput at the official sizes, ours beside the official model.

Run as ``python benchmarks/train_bench.py --model cmin [--official-dir DIR] [--profile]``.

One training step = forward + loss + backward + Adam step on one random batch: T = 200 steps of 500-d
(PCA) clip features, queries of 20 words (GloVe-300, fixed), 2 self-attention layers with 4 heads,
2 syntactic GCN layers over 40 dependency labels, d = 512, the 7 ActivityNet window widths (1400
candidates), batch 64, CPU with ``--threads`` intra-op threads.

With ``--official-dir DIR`` the official model's step (ikuinen/CMIN_moment_retrieval, ``models_/`` and
``modules_/``) runs on random inputs of the same sizes in the same process, right after ours, so the
ratio holds under any load. Get the code with ``git clone
https://github.com/ikuinen/CMIN_moment_retrieval DIR``. Nothing there is modified: its modules are
copied into a temporary directory and patched there for torch 2.14 on CPU: (1) its multi-head attention
scales ``q`` in place (``q *= self.scaling``) on a view returned by ``chunk``, which autograd refuses in
every training step; the copy writes ``q = q * self.scaling``; (2) ``.cuda()`` calls are removed for CPU.
(The third known problem, ``main.py`` importing ``optim.lr_scheduler`` instead of
``optimizer.lr_scheduler``, does not matter here: main.py is not imported.) Its imports of ``fairseq``
(only ``utils.softmax``), ``nltk`` and ``gensim`` (used only for data loading) are stubbed when those
packages are missing.
"""

from __future__ import annotations

import datetime as dt
import shutil
import sys
import tempfile
import time
import types
from argparse import Namespace
from pathlib import Path

import torch
import torch.nn.functional as F

from models import get_model
from train.losses import compute_losses

T, D_IN, L, B_DEFAULT = 200, 500, 20, 64


def _ours_batch(batch_size: int, cfg, g: torch.Generator) -> dict:
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


def _measure(step, model, *, batch_size: int, steps: int, warmup: int, profile: bool) -> dict:
    """Time ``step`` and summarise: samples/s, seconds per step, trainable parameters (and a profile)."""
    elapsed = _time(step, steps, warmup)
    out = {"samples_per_s": steps * batch_size / elapsed, "step_s": elapsed / steps,
           "params": sum(p.numel() for p in model.parameters() if p.requires_grad)}
    if profile:
        out["profile"] = _profile(step)
    return out


def _time(step, steps: int, warmup: int) -> float:
    for _ in range(warmup):
        step()
    start = time.perf_counter()
    for _ in range(steps):
        loss = step()
    elapsed = time.perf_counter() - start
    if not torch.isfinite(loss):
        raise RuntimeError(f"non-finite loss {float(loss)} during the benchmark")
    return elapsed


def measure_ours(*, batch_size: int, steps: int, warmup: int, profile: bool = False) -> dict:
    torch.manual_seed(0)
    entry = get_model("cmin")
    cfg = entry.config_cls(video_dim=D_IN)  # PCA-500 clips; the official run's concat fusion (the default)
    model = entry.build(cfg, vocab_size=5000, num_answers=0, task_type="moment").train()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=8e-4, weight_decay=1e-7)
    batch = _ours_batch(batch_size, cfg, torch.Generator().manual_seed(0))

    def step():
        opt.zero_grad(set_to_none=True)
        loss = sum(compute_losses("moment", model(batch), batch).values())
        loss.backward()
        opt.step()
        return loss.detach()

    return _measure(step, model, batch_size=batch_size, steps=steps, warmup=warmup, profile=profile)


def _official_modules(official_dir: Path, tmp: Path) -> None:
    """Copy the official model code into ``tmp`` and patch it there (see the module docstring)."""
    for sub in ("models_", "modules_"):
        shutil.copytree(official_dir / sub, tmp / sub)
    shutil.copy(official_dir / "utils.py", tmp / "utils.py")
    for path in list((tmp / "models_").glob("*.py")) + list((tmp / "modules_").glob("*.py")):
        text = path.read_text(encoding="utf-8")
        text = text.replace("q *= self.scaling", "q = q * self.scaling").replace(".cuda()", "")
        path.write_text(text, encoding="utf-8")
    for name in ("nltk", "gensim", "gensim.models"):
        if name not in sys.modules:
            try:
                __import__(name)
            except ImportError:
                stub = types.ModuleType(name)
                stub.KeyedVectors = None
                sys.modules[name] = stub
    try:
        import fairseq.utils  # noqa: F401
    except ImportError:
        fairseq = types.ModuleType("fairseq")
        fairseq.utils = types.SimpleNamespace(
            softmax=lambda x, dim, onnx_trace=False: F.softmax(x.float(), dim))
        sys.modules["fairseq"] = fairseq


def measure_official(official_dir: Path, *, batch_size: int, steps: int, warmup: int,
                     profile: bool = False) -> dict:
    official_dir = Path(official_dir)
    if not (official_dir / "models_" / "gcn_final.py").is_file():
        raise SystemExit(f"--official-dir {official_dir}: no models_/gcn_final.py; clone "
                         f"https://github.com/ikuinen/CMIN_moment_retrieval there")
    with tempfile.TemporaryDirectory(prefix="cmin-official-") as tmp:
        _official_modules(official_dir, Path(tmp))
        sys.path.insert(0, tmp)
        try:
            from models_.gcn_final import Model
            from utils import generate_anchors

            args = Namespace(dropout=0.2, max_num_frames=T, frame_dim=D_IN, num_heads=4, num_attn_layers=2,
                             d_model=512, max_num_words=L, word_dim=300, num_gcn_layers=2,
                             dataset="ActivityNet")
            torch.manual_seed(0)
            model = Model(args).train()
            g = torch.Generator().manual_seed(0)
            n_prop = T * len(generate_anchors("ActivityNet"))
            lens = torch.randint(6, L + 1, (batch_size,), generator=g)
            word_mask = (torch.arange(L) < lens[:, None]).to(torch.uint8)
            sparse = torch.rand(batch_size, L, L, generator=g) < 0.05
            adj = torch.randint(2, 41, (batch_size, L, L), generator=g) * sparse
            adj = adj + torch.eye(L, dtype=torch.int64)
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
            opt = torch.optim.AdamW(model.parameters(), lr=8e-4, weight_decay=1e-7)

            def step():
                opt.zero_grad(set_to_none=True)
                _, loss = model(**inputs)
                loss.backward()
                opt.step()
                return loss.detach()

            return _measure(step, model, batch_size=batch_size, steps=steps, warmup=warmup, profile=profile)
        finally:
            sys.path.remove(tmp)
            for name in [m for m in sys.modules if m.split(".")[0] in ("models_", "modules_", "utils")]:
                del sys.modules[name]


def _profile(step) -> str:
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        step()
    return prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=12)


def run(args) -> None:
    """``train_bench.py --model cmin``: print one markdown row (ours, official, ratio)."""
    torch.set_num_threads(args.threads)
    bs = args.batch_size
    ours = measure_ours(batch_size=bs, steps=args.steps, warmup=args.warmup, profile=args.profile)
    setting = (f"CMIN train step (fwd+loss+bwd+AdamW), T={T} steps x {D_IN}-d, {L} words, 7 widths "
               f"(1400 windows), d=512, 4 heads, 2 attn + 2 GCN layers, batch {bs}, {args.threads} threads")
    row = (f"| {dt.date.today().isoformat()} | CPU, {args.threads} threads | benchmarks/train_bench.py "
           f"--model cmin | {setting}; ours {ours['params'] / 1e6:.2f}M params")
    if args.official_dir:
        off = measure_official(Path(args.official_dir), batch_size=bs, steps=args.steps, warmup=args.warmup,
                               profile=args.profile)
        ratio = ours["samples_per_s"] / off["samples_per_s"]
        row += (f", official {off['params'] / 1e6:.2f}M | ours {ours['samples_per_s']:.2f} samples/s, "
                f"official {off['samples_per_s']:.2f} samples/s (same run): {ratio:.2f}x |")
    else:
        row += f" | {ours['samples_per_s']:.2f} samples/s ({ours['step_s']:.2f} s/step) |"
    print(row, flush=True)
    if args.profile:
        print("\nours:\n" + ours["profile"])
        if args.official_dir:
            print("\nofficial:\n" + off["profile"])
