"""MSPAN training throughput at the paper's sizes (run by hand; never part of the test suite).

One training step = forward + backward + Adam step on a synthetic batch: N = 16 frames of 2048-d
appearance and 2048-d motion, K = 8 scales, T = 3 iterations, batch 64, FrameQA-style open-ended head
(5000-word question vocabulary, ``--num-answers`` classes). CPU runs use ``--threads`` intra-op threads
(2 by default); CUDA runs use bf16 autocast like the training loop.

    python benchmarks/train_bench.py                       # CPU, 2 threads, and CUDA when present
    python benchmarks/train_bench.py --device cuda --steps 20
    python benchmarks/train_bench.py --per-iteration-weights   # the official code's weight layout

Prints one markdown row per device for docs/benchmarks.md.

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
import dataclasses
import datetime as dt
import platform
import sys
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

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
) -> dict:
    """Time ``steps`` training steps after ``warmup`` untimed ones.

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

    def step() -> float:
        opt.zero_grad(set_to_none=True)
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=cuda):
            loss = open_ended_loss(model(batch)["logits"], batch["answer"])
        loss.backward()
        opt.step()
        return loss.detach()

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
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto",
                        help="auto: CPU, then CUDA when available")
    parser.add_argument("--threads", type=int, default=2, help="CPU intra-op threads")
    parser.add_argument("--model", choices=["mspan", "masn"], default="mspan")
    parser.add_argument("--batch-size", type=int, default=None, help="default: 64 (mspan), 32 (masn)")
    parser.add_argument("--objects", type=int, default=10, help="masn: objects per frame")
    parser.add_argument("--official-dir", default=None,
                        help="masn: a checkout of ahjeongseo/MASN-pytorch to time beside ours")
    parser.add_argument("--steps", type=int, default=3, help="timed steps (CUDA: use 20+)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps (>= 1; the first counts FLOPs)")
    parser.add_argument("--vocab-size", type=int, default=5000)
    parser.add_argument("--num-answers", type=int, default=1000)
    parser.add_argument("--per-iteration-weights", action="store_true",
                        help="one weight set per iteration, as in the official code (paper: shared)")
    args = parser.parse_args(argv)
    if args.warmup < 1 or args.steps < 1:
        parser.error("--warmup and --steps must be >= 1")
    if args.model == "masn":
        bench_masn(args)
        return
    args.batch_size = args.batch_size or 64

    cfg = get_model("mspan").config_cls()
    cfg = dataclasses.replace(cfg, share_iteration_weights=not args.per_iteration_weights)
    devices = ["cpu", "cuda"] if args.device == "auto" else [args.device]
    if "cuda" in devices and not torch.cuda.is_available():
        if args.device == "cuda":
            raise SystemExit("--device cuda: no CUDA device is available")
        devices.remove("cuda")
    today = dt.date.today().isoformat()
    weights = "per-iteration" if args.per_iteration_weights else "shared"
    setting = (f"MSPAN train step (fwd+bwd+Adam), N={cfg.num_frames} K={cfg.num_scales} T={cfg.iterations} "
               f"D={cfg.node_dim} batch {args.batch_size}, open head {args.num_answers} answers, "
               f"vocab {args.vocab_size}, {weights} weights")
    for device in devices:
        if device == "cpu":
            torch.set_num_threads(args.threads)
        r = measure(device, cfg=cfg, batch_size=args.batch_size, steps=args.steps, warmup=args.warmup,
                    vocab_size=args.vocab_size, num_answers=args.num_answers)
        name = device_name(device, args.threads) + (" bf16 autocast" if device == "cuda" else "")
        print(f"| {today} | {name} | benchmarks/train_bench.py | {setting}, "
              f"{r['params'] / 1e6:.1f}M params, {args.steps} timed steps | "
              f"{r['samples_per_s']:.2f} samples/s ({r['step_s']:.2f} s/step; "
              f"{r['step_gflop']:.0f} GFLOP/step = {r['step_gflop'] / r['step_s']:.0f} GFLOP/s; "
              f"plain fp32 matmul here: {matmul_gflops(device):.0f} GFLOP/s) |", flush=True)


if __name__ == "__main__":
    main()
