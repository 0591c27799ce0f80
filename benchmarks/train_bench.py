"""MSPAN training throughput at the paper's sizes (run by hand; never part of the test suite).

One training step = forward + backward + Adam step on a synthetic batch: N = 16 frames of 2048-d
appearance and 2048-d motion, K = 8 scales, T = 3 iterations, batch 64, FrameQA-style open-ended head
(5000-word question vocabulary, ``--num-answers`` classes), one weight set per iteration (the default).
CPU runs use ``--threads`` intra-op threads (2 by default); CUDA runs use bf16 autocast like the
training loop.

    python benchmarks/train_bench.py                       # CPU, 2 threads, and CUDA when present
    python benchmarks/train_bench.py --device cuda --steps 20
    python benchmarks/train_bench.py --shared-weights      # one weight set for all iterations
    python benchmarks/train_bench.py --device cpu --official-dir /path/to/MSPAN-VideoQA

``--official-dir`` times the official code's training step (its ``VideoQANetwork``, same sizes, same
batch, cross-entropy, Adam) in the same run, right after ours, and prints the ratio. Get the official
code with ``git clone https://github.com/gzcsudo/MSPAN-VideoQA`` (nothing of it is part of this
repository). Its ``SSP.MSPAN`` moves its adjacency matrices to CUDA when built; on a CPU run the
benchmark makes that move a no-op while the model is built.

Prints one markdown row per device (and per model) for docs/benchmarks.md.

``--model siasamrea`` measures SiaSamRea instead (see :func:`siasamrea_bench`): samples/s of a training
step with N = 8 siamese clips and with N = 0 (the base network), their ratio (the training-time cost of
siamese sampling and reasoning), and the same for an evaluation forward (which uses the anchor only, so
the ratio is ~1). SiaSamRea has no public code, so there is no official figure to run beside it.

    python benchmarks/train_bench.py --model siasamrea --device cpu --threads 2

``--model cmin`` runs CMIN's benchmark instead (``benchmarks/cmin_bench.py``; with ``--official-dir``
beside the official model).

``--model masn``: MASN's training step at the paper's sizes (batch 32, T = 20 frames, 10 objects per frame,
2048-d appearance / motion / object features, d = 512, 4 BAN glimpses), FrameQA-style open-ended head. With
``--official-dir DIR`` (a checkout of https://github.com/ahjeongseo/MASN-pytorch, e.g.
``git clone https://github.com/ahjeongseo/MASN-pytorch /tmp/MASN-pytorch``; nothing of it is shipped here)
the official model's training step runs on the same random inputs in the same process, alternating with
ours round by round, and the row reports both figures and their ratio::

    python benchmarks/train_bench.py --model masn --official-dir /tmp/MASN-pytorch --device cpu
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime as dt
import importlib
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from extract.accel import autocast
from models import get_model
from train.losses import open_ended_loss


def synthetic_batch(cfg, *, batch_size: int, vocab_size: int, num_answers: int, device: str) -> dict:
    """A random batch following the batch contract (open-ended task)."""
    g = torch.Generator().manual_seed(0)
    lens = torch.randint(4, 15, (batch_size,), generator=g)
    question = torch.randint(2, vocab_size, (batch_size, 14), generator=g)
    question = question * (torch.arange(14) < lens[:, None])  # 0-padded after each length
    batch = {
        "appearance": torch.randn(batch_size, cfg.num_frames, cfg.appearance_dim, generator=g),
        "motion": torch.randn(batch_size, cfg.num_frames, cfg.motion_dim, generator=g),
        "question": question,
        "question_len": lens,
        "answer": torch.randint(0, num_answers, (batch_size,), generator=g),
    }
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}


def measure(
    device: str,
    *,
    cfg,
    batch_size: int,
    steps: int,
    warmup: int,
    vocab_size: int,
    num_answers: int,
    precision: str | None = None,
) -> dict:
    """Time ``steps`` training steps after ``warmup`` untimed ones.

    ``precision``: the autocast (``extract.accel``: ``bf16`` or ``fp32``, on CPU or CUDA); None: bf16 on
    CUDA, fp32 on CPU.

    Returns:
        dict with ``samples_per_s``, ``step_s`` (mean seconds per step), ``params`` (trainable count),
        ``step_gflop`` (matmul GFLOP of one step, forward + backward, counted on the first warm-up step).
    """
    torch.manual_seed(0)
    entry = get_model("mspan")
    model = entry.build(cfg, vocab_size=vocab_size, num_answers=num_answers, task_type="open").to(device)
    model.train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-4, weight_decay=5e-6)
    batch = synthetic_batch(cfg, batch_size=batch_size, vocab_size=vocab_size, num_answers=num_answers,
                            device=device)
    cuda = device.startswith("cuda")
    precision = precision or ("bf16" if cuda else "fp32")

    def step() -> float:
        opt.zero_grad(set_to_none=True)
        with autocast(device, precision):
            loss = open_ended_loss(model(batch)["logits"], batch["answer"])
        loss.backward()
        opt.step()
        return loss.detach()

    return time_steps(step, model, device=device, batch_size=batch_size, steps=steps, warmup=warmup)


@contextlib.contextmanager
def _cuda_moves_are_noops(enabled: bool):
    """While the official model is built on a CPU run: ``Tensor.cuda()`` returns the tensor itself."""
    if not enabled:
        yield
        return
    original = torch.Tensor.cuda
    torch.Tensor.cuda = lambda self, *a, **k: self  # type: ignore[method-assign]
    try:
        yield
    finally:
        torch.Tensor.cuda = original  # type: ignore[method-assign]


def measure_official(
    official_dir: Path,
    device: str,
    *,
    cfg,
    batch_size: int,
    steps: int,
    warmup: int,
    vocab_size: int,
    num_answers: int,
) -> dict:
    """Time the official code's FrameQA training step at the sizes of ``cfg`` (like :func:`measure`)."""
    official_dir = Path(official_dir).resolve()
    if not (official_dir / "network.py").is_file() or not (official_dir / "SSP.py").is_file():
        raise SystemExit(f"--official-dir {official_dir}: no network.py / SSP.py; clone "
                         f"https://github.com/gzcsudo/MSPAN-VideoQA there")
    sys.path.insert(0, str(official_dir))
    try:
        network = importlib.import_module("network")
        utils = importlib.import_module("utils")
    finally:
        sys.path.remove(str(official_dir))
    args = argparse.Namespace(num_scale=cfg.num_scales, num_frames=cfg.num_frames)
    gcn_adj, gat_adj = utils.make_adjacency(args)
    torch.manual_seed(0)
    with _cuda_moves_are_noops(not device.startswith("cuda")):
        model = network.VideoQANetwork(
            app_pool5_dim=cfg.appearance_dim, motion_dim=cfg.motion_dim, num_frames=cfg.num_frames,
            word_dim=cfg.word_dim, vocab_size=vocab_size, module_dim=cfg.hidden_dim, question_type="frameqa",
            num_answers=num_answers, num_scale=cfg.num_scales, dropout=cfg.dropout, GCN_adj=gcn_adj,
            GAT_adj=gat_adj, K=cfg.iterations, T=cfg.gcn_layers,
        ).to(device)
    model.train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-4, weight_decay=5e-6)
    b = synthetic_batch(cfg, batch_size=batch_size, vocab_size=vocab_size, num_answers=num_answers,
                        device=device)
    zeros = torch.zeros(batch_size, 5, device=device)
    qlen = b["question_len"].cpu()  # its pack_padded_sequence needs CPU lengths
    cuda = device.startswith("cuda")

    def step() -> float:
        opt.zero_grad(set_to_none=True)
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=cuda):
            logits = model(b["appearance"], b["motion"], b["question"], qlen, zeros, zeros)
            loss = torch.nn.functional.cross_entropy(logits.float(), b["answer"])
        loss.backward()
        opt.step()
        return loss.detach()

    return time_steps(step, model, device=device, batch_size=batch_size, steps=steps, warmup=warmup)


def time_steps(step: Callable[[], torch.Tensor], model: torch.nn.Module, *, device: str, batch_size: int,
               steps: int, warmup: int) -> dict:
    """Run ``warmup`` untimed steps (FLOPs counted on the first) and ``steps`` timed ones."""
    cuda = device.startswith("cuda")
    counter = FlopCounterMode(display=False)
    with counter:
        step()
    for _ in range(warmup - 1):
        step()
    if cuda:
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(steps):
        loss = step()
    if cuda:
        torch.cuda.synchronize()
    elapsed = time.perf_counter() - start
    if not torch.isfinite(loss):
        raise RuntimeError(f"non-finite loss {float(loss)} during the benchmark on {device}")
    return {
        "samples_per_s": steps * batch_size / elapsed,
        "step_s": elapsed / steps,
        "params": sum(p.numel() for p in model.parameters() if p.requires_grad),
        "step_gflop": counter.get_total_flops() / 1e9,
    }


def matmul_gflops(device: str, *, size: int = 2048, rows: int = 4096, repeats: int = 5) -> float:
    """Dense float32 matmul throughput of this device: a yardstick for the step throughput."""
    a = torch.randn(rows, size, device=device)
    w = torch.randn(size, size, device=device)
    a @ w
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(repeats):
        a @ w
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return 2 * rows * size * size * repeats / (time.perf_counter() - start) / 1e9


def device_name(device: str, threads: int) -> str:
    if device.startswith("cuda"):
        return torch.cuda.get_device_name(torch.device(device))
    return f"CPU {platform.processor() or platform.machine()}, {threads} threads"


def siasamrea_batch(cfg, *, batch_size: int, num_frames: int, vocab_size: int, num_answers: int,
                    device: str) -> dict:
    """A random open-ended batch for SiaSamRea: ``frames`` (B, T, Da) at 4 fps with masks and times."""
    g = torch.Generator().manual_seed(0)
    lens = torch.randint(4, 15, (batch_size,), generator=g)
    question = torch.randint(2, vocab_size, (batch_size, 14), generator=g)
    question = question * (torch.arange(14) < lens[:, None])
    n = torch.randint(num_frames // 2, num_frames + 1, (batch_size,), generator=g)
    mask = torch.arange(num_frames)[None] < n[:, None]
    batch = {
        "frames": torch.randn(batch_size, num_frames, cfg.frames_dim, generator=g) * mask[..., None],
        "frames_mask": mask,
        "frame_times": torch.arange(num_frames).float().expand(batch_size, -1) / 4.0,
        "question": question,
        "question_len": lens,
        "answer": torch.randint(0, num_answers, (batch_size,), generator=g),
    }
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}


def siasamrea_bench(device: str, *, num_siamese: int, batch_size: int, num_frames: int, steps: int,
                    warmup: int, vocab_size: int, num_answers: int) -> dict:
    """Training steps/s and evaluation forwards/s of SiaSamRea (paper defaults but ``num_siamese``).

    Returns:
        ``train_samples_per_s``, ``eval_samples_per_s``, ``params``; the loss is the shared loss
        function's (cross-entropy + alpha * L_siamese), so the step is the training loop's.
    """
    from train.losses import compute_losses

    entry = get_model("siasamrea")
    cfg = dataclasses.replace(entry.config_cls(), num_siamese=num_siamese)
    torch.manual_seed(0)
    model = entry.build(cfg, vocab_size=vocab_size, num_answers=num_answers, task_type="open").to(device)
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    batch = siasamrea_batch(cfg, batch_size=batch_size, num_frames=num_frames, vocab_size=vocab_size,
                            num_answers=num_answers, device=device)
    cuda = device.startswith("cuda")

    def train_step() -> None:
        opt.zero_grad(set_to_none=True)
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=cuda):
            losses = compute_losses("open", model(batch), batch)
        sum(losses.values()).backward()
        opt.step()

    def eval_step() -> None:
        with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16, enabled=cuda):
            model(batch)

    out = {"params": sum(p.numel() for p in model.parameters() if p.requires_grad)}
    for name, fn, mode in (("train", train_step, True), ("eval", eval_step, False)):
        model.train(mode)
        for _ in range(warmup):
            fn()
        if cuda:
            torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(steps):
            fn()
        if cuda:
            torch.cuda.synchronize()
        out[f"{name}_samples_per_s"] = steps * batch_size / (time.perf_counter() - start)
    return out


def siasamrea_main(args: argparse.Namespace, devices: list[str]) -> None:
    today = dt.date.today().isoformat()
    for device in devices:
        if device == "cpu":
            torch.set_num_threads(args.threads)
        kw = dict(batch_size=args.batch_size, num_frames=args.num_frames, steps=args.steps,
                  warmup=args.warmup, vocab_size=args.vocab_size, num_answers=args.num_answers)
        base = siasamrea_bench(device, num_siamese=0, **kw)
        full = siasamrea_bench(device, num_siamese=8, **kw)
        name = device_name(device, args.threads) + (" bf16 autocast" if device == "cuda" else "")
        setting = (f"SiaSamRea (paper defaults: H=768, 2 layers, Bf=8 frames/clip) batch {args.batch_size}, "
                   f"{args.num_frames} feature frames/video, open head {args.num_answers} answers, "
                   f"{full['params'] / 1e6:.1f}M params, {args.steps} timed steps")
        b, f = base, full
        print(f"| {today} | {name} | benchmarks/train_bench.py --model siasamrea | {setting} | "
              f"train: N=0 {b['train_samples_per_s']:.1f}, N=8 {f['train_samples_per_s']:.1f} samples/s "
              f"(N=8 costs {b['train_samples_per_s'] / f['train_samples_per_s']:.2f}x N=0); "
              f"eval (anchor only): N=0 {b['eval_samples_per_s']:.1f}, "
              f"N=8 {f['eval_samples_per_s']:.1f} samples/s |", flush=True)


def masn_batch(cfg, *, batch_size: int, objects: int, vocab_size: int, num_answers: int) -> dict:
    """A random ``masn``-layout batch (every frame and object real, questions of 4..14 words)."""
    g = torch.Generator().manual_seed(0)
    B, T, M = batch_size, cfg.num_frames, objects
    lens = torch.randint(4, 15, (B,), generator=g)
    return {
        "appearance": torch.randn(B, T, cfg.appearance_dim, generator=g),
        "motion": torch.randn(B, T, cfg.motion_dim, generator=g),
        "objects": torch.randn(B, T, M, cfg.appearance_dim, generator=g),
        "object_boxes": torch.rand(B, T, M, 6, generator=g),
        "motion_objects": torch.randn(B, T, M, cfg.motion_dim, generator=g),
        "frame_mask": torch.ones(B, T, dtype=torch.bool),
        "object_mask": torch.ones(B, T, M, dtype=torch.bool),
        "question": torch.randint(2, vocab_size, (B, 20), generator=g) * (torch.arange(20) < lens[:, None]),
        "question_len": lens,
        "answer": torch.randint(0, num_answers, (B,), generator=g),
    }


def _official_masn_step(official_dir: str, cfg, batch: dict, *, vocab_size: int, num_answers: int):
    """The official model (``model.masn.MASN`` of ahjeongseo/MASN-pytorch) and a closure running its step."""
    sys.path.insert(0, official_dir)
    import numpy as np
    from model.masn import MASN as Official  # noqa: N814  (the official class)

    torch.manual_seed(0)
    glove = np.random.default_rng(0).standard_normal((vocab_size, cfg.word_dim)).astype("float32")
    model = Official(vocab_size, 1, glove, cfg.appearance_dim, cfg.motion_dim, cfg.hidden_dim,
                     dropout_p=cfg.dropout, gcn_layers=2, answer_vocab_size=num_answers, q_max_len=20,
                     v_max_len=cfg.num_frames)
    model.train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    b = batch
    vlen = b["frame_mask"].sum(1)
    args = (b["appearance"], b["motion"], b["objects"], b["object_boxes"], b["motion_objects"], vlen,
            b["question"], b["question_len"], b["answer"], None)

    def step():
        opt.zero_grad(set_to_none=True)
        loss = open_ended_loss(model("FrameQA", *args)[0], b["answer"])
        loss.backward()
        opt.step()
        return loss.detach()

    return model, step


def bench_masn(args) -> None:
    """Our MASN beside the official one (``--official-dir``) on the same random batch, CPU."""
    torch.set_num_threads(args.threads)
    entry = get_model("masn")
    cfg = entry.config_cls()
    batch_size = args.batch_size or 32
    batch = masn_batch(cfg, batch_size=batch_size, objects=args.objects, vocab_size=args.vocab_size,
                       num_answers=args.num_answers)
    torch.manual_seed(0)
    model = entry.build(cfg, vocab_size=args.vocab_size, num_answers=args.num_answers, task_type="open")
    model.train()
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-4)

    def ours():
        opt.zero_grad(set_to_none=True)
        loss = open_ended_loss(model(batch)["logits"], batch["answer"])
        loss.backward()
        opt.step()
        return loss.detach()

    runs = {"ours": ours}
    official = None
    if args.official_dir:
        official, runs["official"] = _official_masn_step(
            args.official_dir, cfg, batch, vocab_size=args.vocab_size, num_answers=args.num_answers)
    elapsed = dict.fromkeys(runs, 0.0)
    for _ in range(args.warmup):
        for fn in runs.values():
            fn()
    for _ in range(args.steps):  # alternate, so both see the same machine load
        for name, fn in runs.items():
            start = time.perf_counter()
            loss = fn()
            elapsed[name] += time.perf_counter() - start
            if not torch.isfinite(loss):
                raise RuntimeError(f"non-finite loss in the {name} MASN step")
    rate = {k: args.steps * batch_size / v for k, v in elapsed.items()}
    params = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    setting = (f"MASN train step (fwd+bwd+Adam), T={cfg.num_frames} M={args.objects} 2048-d, "
               f"d={cfg.hidden_dim}, g={cfg.glimpses}, batch {batch_size}, open head {args.num_answers} "
               f"answers, "
               f"vocab {args.vocab_size}; {params / 1e6:.1f}M params ({trainable / 1e6:.1f}M trainable)")
    cell = f"ours {rate['ours']:.2f} samples/s ({elapsed['ours'] / args.steps:.2f} s/step)"
    if official is not None:
        off_params = sum(p.numel() for p in official.parameters())
        cell += (f"; official {rate['official']:.2f} samples/s ({off_params / 1e6:.1f}M params); "
                 f"ratio {rate['ours'] / rate['official']:.2f}x")
    print(f"| {dt.date.today().isoformat()} | {device_name('cpu', args.threads)} | benchmarks/train_bench.py "
          f"--model masn | {setting}, {args.steps} alternating timed steps | {cell} |", flush=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", choices=["mspan", "masn", "cmin", "siasamrea"], default="mspan",
                        help="which model's benchmark to run (default: MSPAN)")
    parser.add_argument("--profile", action="store_true", help="cmin: print a torch profile of one step")
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto",
                        help="auto: CPU, then CUDA when available")
    parser.add_argument("--threads", type=int, default=2, help="CPU intra-op threads")
    parser.add_argument("--batch-size", type=int, default=None, help="default: 32 (masn), 64 (the others)")
    parser.add_argument("--objects", type=int, default=10, help="masn: objects per frame")
    parser.add_argument("--steps", type=int, default=3, help="timed steps (CUDA: use 20+)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps (>= 1; the first counts FLOPs)")
    parser.add_argument("--vocab-size", type=int, default=5000)
    parser.add_argument("--num-answers", type=int, default=1000)
    parser.add_argument("--shared-weights", action="store_true",
                        help="one weight set for all iterations (default: one per iteration, as the official "
                        "code)")
    parser.add_argument("--variant", choices=["paper", "official"], default="paper",
                        help="MSPAN setting (models/mspan.py)")
    parser.add_argument("--official-dir", type=Path, default=None,
                        help="a clone of the model's official code (mspan: gzcsudo/MSPAN-VideoQA, masn: "
                        "ahjeongseo/MASN-pytorch, cmin: ikuinen/CMIN_moment_retrieval): also time its "
                        "training step in this run")
    parser.add_argument("--precision", default=None,
                        help="mspan: comma-separated autocasts to time, e.g. fp32,bf16 (default: bf16 "
                        "on CUDA, fp32 on CPU); with --official-dir the official step (as its code: fp32 "
                        "on CPU) runs once beside them")
    parser.add_argument("--num-frames", type=int, default=64,
                        help="siasamrea: feature frames per video (64 = 16 s at 4 fps)")
    args = parser.parse_args(argv)
    if args.warmup < 1 or args.steps < 1:
        parser.error("--warmup and --steps must be >= 1")
    args.batch_size = args.batch_size or (32 if args.model == "masn" else 64)
    if args.model == "siasamrea":
        devices = ["cpu", "cuda"] if args.device == "auto" else [args.device]
        if "cuda" in devices and not torch.cuda.is_available():
            if args.device == "cuda":
                raise SystemExit("--device cuda: no CUDA device is available")
            devices.remove("cuda")
        siasamrea_main(args, devices)
        return
    if args.model == "cmin":
        from cmin_bench import run as run_cmin  # beside this file (sys.path[0] when run as a script)

        run_cmin(args)
        return
    if args.model == "masn":
        bench_masn(args)
        return

    cfg = get_model("mspan").config_cls()
    cfg = dataclasses.replace(cfg, share_iteration_weights=args.shared_weights, variant=args.variant)
    devices = ["cpu", "cuda"] if args.device == "auto" else [args.device]
    if "cuda" in devices and not torch.cuda.is_available():
        if args.device == "cuda":
            raise SystemExit("--device cuda: no CUDA device is available")
        devices.remove("cuda")
    today = dt.date.today().isoformat()
    weights = "shared" if args.shared_weights else "per-iteration"
    setting = (f"train step (fwd+bwd+Adam), N={cfg.num_frames} K={cfg.num_scales} T={cfg.iterations} "
               f"D={cfg.node_dim} batch {args.batch_size}, open head {args.num_answers} answers, "
               f"vocab {args.vocab_size}")
    sizes = dict(cfg=cfg, batch_size=args.batch_size, steps=args.steps, warmup=args.warmup,
                 vocab_size=args.vocab_size, num_answers=args.num_answers)
    for device in devices:
        if device == "cpu":
            torch.set_num_threads(args.threads)
        precisions = args.precision.split(",") if args.precision else ["bf16" if device == "cuda" else "fp32"]
        ours = {}
        for precision in precisions:
            name = f"{device_name(device, args.threads)} {precision} autocast"
            ours[precision] = measure(device, **sizes, precision=precision)
            _row(today, name, f"MSPAN ({args.variant}, {weights} weights) {setting}", ours[precision],
                 args.steps, matmul_gflops(device))
        if args.official_dir is not None:
            o = measure_official(args.official_dir, device, **sizes)
            theirs = "bf16" if device == "cuda" else "fp32"
            where = device_name(device, args.threads)
            _row(today, f"{where} {theirs} autocast", f"official MSPAN code {setting}", o, args.steps, None)
            for precision, r in ours.items():
                print(f"ours ({precision}) / official ({theirs}) samples/s on {where}: "
                      f"{r['samples_per_s'] / o['samples_per_s']:.2f}", flush=True)


def _row(today: str, name: str, setting: str, r: dict, steps: int, matmul: float | None) -> None:
    yardstick = f"; plain fp32 matmul here: {matmul:.0f} GFLOP/s" if matmul is not None else ""
    print(f"| {today} | {name} | benchmarks/train_bench.py | {setting}, "
          f"{r['params'] / 1e6:.1f}M params, {steps} timed steps | "
          f"{r['samples_per_s']:.2f} samples/s ({r['step_s']:.2f} s/step; "
          f"{r['step_gflop']:.0f} GFLOP/step = {r['step_gflop'] / r['step_s']:.0f} GFLOP/s{yardstick}) |",
          flush=True)


if __name__ == "__main__":
    main()
