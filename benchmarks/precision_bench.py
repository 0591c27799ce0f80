"""fp32 against bf16 autocast, side by side in one run (run by hand; never part of the test suite).

For each precision, on the same inputs and in alternation, it measures:

1. extraction, model stage: ``LoadedBackbone.features`` (preprocessing + forward + pooling) on generated
   uint8 frames, frames/s, for ResNet-152 at 224 px and the 3D ResNet-152 (Kinetics-700) on 16-frame
   clips at 112 px: the MSPAN feature set's backbones at the paper's sizes; and C3D fc7 (``c3d_sports1m``,
   cmin's) on the same clips, clips/s (random weights: the cost is the same as with the pretrained ones);
2. parity: the per-frame (per-clip) cosine similarity of the bf16 features to the fp32 ones, and the
   largest absolute difference relative to the largest fp32 feature;
3. MSPAN training samples/s (``train_bench``: forward + backward + Adam on a synthetic batch at the
   paper's model sizes) in fp32 and bf16, beside the official code's step in both when ``--official-dir``
   is given (``git clone https://github.com/gzcsudo/MSPAN-VideoQA``; nothing of it is
   part of this repository).

bf16 is emulated on a CPU without AVX-512 BF16 / AMX, and then many times slower: keep ``--frames``,
``--clips`` and ``--train-batch`` small there. The header says whether this CPU has native bf16, the
threads and the load average, so the figures can be read as ratios.

    python benchmarks/precision_bench.py --threads 2
    python benchmarks/precision_bench.py --threads 2 --official-dir /tmp/MSPAN-VideoQA --train-batch 8

Prints markdown rows for docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))  # train_bench beside this file
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository

from extract.accel import bf16_native, cpu_flags  # noqa: E402
from extract.backbones import build_backbone  # noqa: E402

PRECISIONS = ("fp32", "bf16")


def frames_of(n: int, size: int, seed: int = 0) -> np.ndarray:
    """``n`` (size x size) frames of a moving noise texture, uint8 (N, S, S, 3)."""
    rng = np.random.default_rng(seed)
    texture = rng.integers(0, 256, size=(size, size, 3), dtype=np.uint8)
    return np.stack([np.roll(texture, shift=(2 * t, 3 * t), axis=(0, 1)) for t in range(n)])


def time_features(backbone, x: np.ndarray, size: int, batch: int) -> tuple[float, np.ndarray]:
    """One untimed item (allocations, kernel selection), then the whole of ``x``: (seconds, features)."""
    backbone.features(x[:1], size=size, batch_size=1)
    start = time.perf_counter()
    feats = backbone.features(x, size=size, batch_size=batch)
    return time.perf_counter() - start, feats


def cosine_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def bench_backbone(name: str, x: np.ndarray, *, size: int, batch: int, frames_per_item: int) -> list[str]:
    """Rows for one backbone: frames/s per precision, their ratio, and the parity of the features."""
    secs, feats = {}, {}
    for precision in PRECISIONS:
        backbone = build_backbone(name, weights="random", precision=precision)
        secs[precision], feats[precision] = time_features(backbone, x, size, batch)
    rate = {p: len(x) * frames_per_item / secs[p] for p in PRECISIONS}
    cos = cosine_rows(feats["fp32"], feats["bf16"])
    rel = np.abs(feats["fp32"] - feats["bf16"]).max() / np.abs(feats["fp32"]).max()
    unit = "frames" if frames_per_item == 1 else f"frames ({len(x)} clips of {frames_per_item})"
    clips = "" if frames_per_item == 1 else (
        f" = {rate['fp32'] / frames_per_item:.3f} / {rate['bf16'] / frames_per_item:.3f} clips/s")
    return [
        f"{name} at {size} px, {len(x) * frames_per_item} {unit}, batch {batch}: fp32 {rate['fp32']:.2f} "
        f"frames/s, bf16 {rate['bf16']:.2f} frames/s{clips} (bf16/fp32 {rate['bf16'] / rate['fp32']:.2f}x); "
        f"bf16 vs fp32 cosine per item min {cos.min():.6f} mean {cos.mean():.6f}, max |diff| / max |fp32| "
        f"{rel:.4f}"
    ]


def bench_training(args: argparse.Namespace) -> list[str]:
    """MSPAN training samples/s, ours and the official code (when given), fp32 and bf16, same sizes, the
    timed steps alternating (``train_bench.race``)."""
    import train_bench

    official = None
    if args.official_dir is not None:
        official = train_bench.find_official(train_bench.BENCHES["mspan"], [str(args.official_dir)])
        if official is None:
            raise SystemExit(f"--official-dir {args.official_dir}: no clone of gzcsudo/MSPAN-VideoQA there")
    sizes = argparse.Namespace(batch_size=args.train_batch, shared_weights=False, variant="paper")
    with train_bench.official_code(official) if official else contextlib.nullcontext():
        lineup = train_bench.mspan_contenders(sizes, "cpu", official)
        results = train_bench.race(lineup.contenders, list(PRECISIONS), device="cpu", steps=args.train_steps,
                                   warmup=1)
    rate = {k: args.train_batch / r["step_s"] for k, r in results.items()}
    rows = [f"MSPAN (paper sizes, per-iteration weights) train step, batch {args.train_batch}, {label} {p}: "
            f"{rate[label, p]:.2f} samples/s ({results[label, p]['step_s']:.2f} s/step)" for label, p in rate]
    labels = [c.label for c in lineup.contenders]
    rows += train_bench.summary("MSPAN", rate, list(PRECISIONS), labels)
    return rows


def header(threads: int) -> str:
    flags = sorted(f for f in cpu_flags() if f.startswith(("avx512", "amx")) or f in ("avx", "avx2"))
    model = "unknown CPU"
    if os.path.exists("/proc/cpuinfo"):
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            model = next((ln.split(":", 1)[1].strip() for ln in fh if ln.startswith("model name")), model)
    load = os.getloadavg()
    return (f"{dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC, {model} ({os.cpu_count()} CPUs, flags "
            f"{' '.join(flags) or 'none'}), native bf16: {bf16_native('cpu')}, torch {torch.__version__}, "
            f"{threads} threads, load average at start {load[0]:.1f}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    parser.add_argument("--frames", type=int, default=4, help="ResNet-152 images per precision")
    parser.add_argument("--clips", type=int, default=1, help="3D ResNet-152 / C3D clips per precision")
    parser.add_argument("--train-batch", type=int, default=8, help="MSPAN batch (the paper: 64)")
    parser.add_argument("--train-steps", type=int, default=1, help="timed MSPAN steps after one warm-up")
    parser.add_argument("--official-dir", type=Path, default=None, help="a clone of MSPAN-VideoQA")
    parser.add_argument("--skip", choices=["extract", "c3d", "train"], action="append", default=[])
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    print(header(args.threads), flush=True)
    if "extract" not in args.skip:
        for row in bench_backbone("resnet152", frames_of(args.frames, 224), size=224, batch=args.frames,
                                  frames_per_item=1):
            print(row, flush=True)
        clips = frames_of(args.clips * 16, 112, seed=1).reshape(args.clips, 16, 112, 112, 3)
        for row in bench_backbone("r3d152_k700", clips, size=112, batch=args.clips, frames_per_item=16):
            print(row, flush=True)
    if "extract" not in args.skip and "c3d" not in args.skip:
        for row in bench_backbone("c3d_sports1m", clips, size=112, batch=args.clips, frames_per_item=16):
            print(row, flush=True)
    if "train" not in args.skip:
        for row in bench_training(args):
            print(row, flush=True)
    print(f"load average at the end {os.getloadavg()[0]:.1f}", flush=True)


if __name__ == "__main__":
    main()
