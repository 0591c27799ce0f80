"""Import throughput and memory of ``vqa-extract import`` on a synthetic ActivityNet-size file (run by hand).

Writes, under ``--work`` (default a temporary directory), ActivityNet Captions annotations
(``train.json`` / ``val_1.json`` / ``val_2.json``) over ``--videos`` ids and the challenge layout's
``sub_activitynet_v1-3.c3d.hdf5`` (a group ``v_<id>`` holding ``c3d_features`` (T, ``--dim``) float32,
T uniform in ``--min-clips`` .. ``--max-clips``), then measures, each in a fresh subprocess:

1. ``raw read``: the peer: h5py reading every video's ``c3d_features`` once, as the official loaders do per
   item (the floor for any import of this file);
2. ``import``: ``vqa-extract import activitynet-c3d`` (hashing the file, reading, checking, writing the shards
   and the manifest), for the first tenth of the ids and for all of them, with the process's peak resident
   memory (``ru_maxrss``): it must not grow with the number of videos;
3. ``re-run``: the same command on the finished output (the file's hash comes from the manifest's cache).

    python benchmarks/import_bench.py                      # 20,000 videos, T 4..12, 500-d
    python benchmarks/import_bench.py --videos 2000 --work /tmp/ib

Prints a markdown table (videos/s, MiB/s of features, peak memory) with the ratio import / raw read.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

RAW_READ = """
import sys, time, h5py
path, ids = sys.argv[1], open(sys.argv[2]).read().split()
t0 = time.perf_counter()
n = 0
with h5py.File(path, "r") as f:
    for vid in ids:
        n += f[vid]["c3d_features"][()].nbytes
print(time.perf_counter() - t0, n)
"""


def make_data(work: Path, videos: int, dim: int, lo: int, hi: int, seed: int = 0) -> tuple[Path, Path, int]:
    """The annotations and the challenge file (reused when present); ``(annotation root, file, bytes)``."""
    ann, src = work / "ann", work / "sub_activitynet_v1-3.c3d.hdf5"
    ids = [f"v_{i:011d}" for i in range(videos)]
    rng = np.random.default_rng(seed)
    lengths = rng.integers(lo, hi + 1, size=videos)
    if not src.exists():
        import h5py

        tmp = src.with_suffix(".tmp")
        with h5py.File(tmp, "w") as f:
            for vid, t in zip(ids, lengths, strict=True):
                x = rng.standard_normal((t, dim), np.float32)
                f.create_group(vid).create_dataset("c3d_features", data=x)
        tmp.rename(src)
    ann.mkdir(parents=True, exist_ok=True)
    cut = [0, int(0.8 * videos), int(0.9 * videos), videos]
    for name, a, b in zip(("train.json", "val_1.json", "val_2.json"), cut[:-1], cut[1:], strict=True):
        entries = {v: {"duration": 4.0 * t, "timestamps": [[0.0, 2.0]], "sentences": ["a person runs ."]}
                   for v, t in zip(ids[a:b], lengths[a:b], strict=True)}
        (ann / name).write_text(json.dumps(entries))
    return ann, src, int(lengths.sum()) * dim * 4


def subset(ann: Path, work: Path, fraction: float) -> Path:
    """Annotations over the first ``fraction`` of each split."""
    out = work / f"ann-{fraction:g}"
    out.mkdir(exist_ok=True)
    for name in ("train.json", "val_1.json", "val_2.json"):
        data = json.loads((ann / name).read_text())
        keep = list(data)[: max(1, int(len(data) * fraction))]
        (out / name).write_text(json.dumps({k: data[k] for k in keep}))
    return out


WRAP = """
import resource, subprocess, sys
res = subprocess.run(sys.argv[1:], capture_output=True, text=True)
sys.stdout.write(res.stdout)
sys.stderr.write(res.stderr)
print("PEAK_KB", resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
sys.exit(res.returncode)
"""


def run(cmd: list[str]) -> tuple[float, int, str]:
    """Wall seconds, peak resident memory (MiB) of this command's process alone, its stdout."""
    t0 = time.perf_counter()
    res = subprocess.run([sys.executable, "-c", WRAP, *cmd], capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if res.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({res.returncode}):\n{res.stdout}\n{res.stderr}")
    peak = int(res.stdout.rsplit("PEAK_KB", 1)[1].split()[0])
    return wall, peak // 1024, res.stdout


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--videos", type=int, default=20000)
    ap.add_argument("--dim", type=int, default=500)
    ap.add_argument("--min-clips", type=int, default=4)
    ap.add_argument("--max-clips", type=int, default=12)
    ap.add_argument("--work", type=Path, default=None)
    args = ap.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="import-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    ann, src, nbytes = make_data(work, args.videos, args.dim, args.min_clips, args.max_clips)
    ids = work / "ids.txt"
    ids.write_text("\n".join(f"v_{i:011d}" for i in range(args.videos)))
    rows = []
    wall, peak, out = run([sys.executable, "-c", RAW_READ, str(src), str(ids)])
    read_s = float(out.split()[0])
    rows.append(("raw read (h5py, every video once)", args.videos, read_s, peak, nbytes))
    for fraction in (0.1, 1.0):
        sub = subset(ann, work, fraction) if fraction < 1 else ann
        n = sum(len(json.loads((sub / f).read_text())) for f in ("train.json", "val_1.json", "val_2.json"))
        out_dir = work / f"out-{fraction:g}"
        cmd = [sys.executable, "-m", "extract.cli", "import", "activitynet-c3d", str(src), "--dataset",
               "activitynet-captions", "--root", str(sub), "--out", str(out_dir), "--overwrite"]
        wall, peak, _ = run(cmd)
        rows.append((f"import ({n} videos)", n, wall, peak, nbytes * n // args.videos))
        if fraction == 1.0:
            again, peak2, _ = run(cmd[:-1])
            rows.append(("re-run on the finished output", n, again, peak2, 0))
    print(f"{platform.machine()}, {os.cpu_count()} CPUs, python {platform.python_version()}, "
          f"{time.strftime('%Y-%m-%d')}; file {src.stat().st_size / 2**20:.0f} MiB, {args.videos} videos, "
          f"T {args.min_clips}..{args.max_clips}, {args.dim}-d\n")
    print("| run | videos | wall (s) | videos/s | MiB/s of features | peak RSS (MiB) |")
    print("|---|---|---|---|---|---|")
    for name, n, wall, peak, b in rows:
        print(f"| {name} | {n} | {wall:.1f} | {n / wall:.0f} | {b / 2**20 / wall:.1f} | {peak} |")
    full = next(r for r in rows if r[0].startswith("import") and r[1] == args.videos)
    print(f"\nimport / raw read wall time: {full[2] / read_s:.1f}x")


if __name__ == "__main__":
    main()
