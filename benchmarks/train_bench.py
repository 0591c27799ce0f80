"""MSPAN training throughput at the paper's sizes (run by hand; never part of the test suite).

One training step = forward + backward + Adam step on a synthetic batch: N = 16 frames of 2048-d
appearance and 2048-d motion, K = 8 scales, T = 3 iterations, batch 64, FrameQA-style open-ended head
(5000-word question vocabulary, ``--num-answers`` classes). CPU runs use ``--threads`` intra-op threads
(2 by default); CUDA runs use bf16 autocast like the training loop.

    python benchmarks/train_bench.py                       # CPU, 2 threads, and CUDA when present
    python benchmarks/train_bench.py --device cuda --steps 20
    python benchmarks/train_bench.py --per-iteration-weights   # the official code's weight layout

Prints one markdown row per device for docs/benchmarks.md. ``--model cmin`` runs CMIN's benchmark
instead (``benchmarks/cmin_bench.py``; with ``--official-dir`` beside the official model).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import platform
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


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", choices=["mspan", "cmin"], default="mspan", help="the model to benchmark")
    parser.add_argument("--official-dir", default=None,
                        help="cmin: the official code's clone, run beside ours")
    parser.add_argument("--profile", action="store_true", help="cmin: print a torch profile of one step")
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto",
                        help="auto: CPU, then CUDA when available")
    parser.add_argument("--threads", type=int, default=2, help="CPU intra-op threads")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=3, help="timed steps (CUDA: use 20+)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps (>= 1; the first counts FLOPs)")
    parser.add_argument("--vocab-size", type=int, default=5000)
    parser.add_argument("--num-answers", type=int, default=1000)
    parser.add_argument("--per-iteration-weights", action="store_true",
                        help="one weight set per iteration, as in the official code (paper: shared)")
    args = parser.parse_args(argv)
    if args.warmup < 1 or args.steps < 1:
        parser.error("--warmup and --steps must be >= 1")
    if args.model == "cmin":
        from benchmarks.cmin_bench import run as run_cmin

        run_cmin(args)
        return

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
