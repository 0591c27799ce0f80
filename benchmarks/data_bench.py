"""Training data path throughput: samples/s the datasets deliver through the DataLoader, without a model.

What a training run's loader does (``train.runner.data.make_loader``: workers, pinned memory on CUDA only,
shuffled sampler, the dataset's collate), on a synthetic feature directory written by the toolkit's own shard
writer, read by the toolkit's own ``FeatureReader``:

- **qa**: ``QADataset`` + ``QACollate`` over an ``mspan`` directory of TGIF-QA size (default 40,000 videos,
  ``appearance`` and ``motion`` (16, 2048) float16, 256 videos a shard: 5 GiB, several times the
  dataset's in-memory cache of 1 GiB), one question a video, features standardised per channel
  (``train.feature_norm=standardize``, the demo's setting; ``--no-standardize`` for the default), batch 64;
- **moment**: ``MomentDataset`` + ``MomentCollate`` over a ``cmin`` directory (default 2,000 videos of 50-400
  clips of 500-d float16 PCA features, as the released ActivityNet ones), 200 steps, a 500-component PCA
  and standardisation as CMIN's defaults, batch 64.

Each row is one loader setting: 0 workers (in the main process), 1 worker (one core's worth), and all
cores (``os.cpu_count()`` workers); the main process only receives the batches. A timed run starts after
``--warmup`` batches (workers started, first reads done) and covers ``--batches`` batches of a fresh
shuffled epoch, so a video is read from the shards, not the cache, unless it came up earlier in the run.
Bytes per sample: what the shards hold for one sample (read) and what the batch carries (delivered).
Samples per loading CPU-second: the samples over the CPU time of the processes that load them (the
workers, or the main process with 0 workers), from ``/proc``: unlike samples/s it hardly depends on what
else the machine runs, and N free cores deliver about N times it.
Below the rows, one process times each stage alone on the same videos: the reads (``FeatureReader``),
the dataset's items (reads + checks + float32 + standardisation) and the collate.

    python benchmarks/data_bench.py                          # generates /tmp/vqa-data-bench once (5.9 GiB)
    python benchmarks/data_bench.py --only qa --workers 0,1,2
    python benchmarks/data_bench.py --cold                   # page cache dropped before each row
    python benchmarks/data_bench.py --dry-run                # tiny data, a few batches: it runs
    python benchmarks/data_bench.py --delete                 # remove the generated directories

The generated directories are reused while their parameters match (recorded in their provenance); they
are deleted only with ``--delete``. ``--cold`` asks the kernel to drop the shards from the page cache
(``posix_fadvise(DONTNEED)``, no privileges needed) before each row, so reads come from the disk.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime as dt
import os
import shutil
import sys
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the toolkit of this checkout, before an installed one

from extract.featuredir import write_feature_dir  # noqa: E402
from extract.reader import FeatureReader  # noqa: E402
from extract.shards import SHARD_DIR  # noqa: E402
from pipelines.text import EncodedMoments, EncodedSplit  # noqa: E402
from train.data import QACollate, QADataset, feature_statistics  # noqa: E402
from train.moments import MomentCollate, MomentDataset, Projection  # noqa: E402
from train.runner.data import make_loader as _loader  # noqa: E402  (the training run's DataLoader)


@dataclasses.dataclass(frozen=True)
class Sizes:
    """The synthetic directories and the timed runs: the real ones, or :data:`DRY`."""

    qa_videos: int = 40_000
    frames: int = 16
    dims: tuple[int, int] = (2048, 2048)  # appearance, motion (mspan)
    moment_videos: int = 2_000
    clips: tuple[int, int] = (50, 400)  # per video, uniform
    clip_dim: int = 500
    steps: int = 200
    pca_dim: int = 500
    shard_size: int = 256
    dtype: str = "float16"
    batch: int = 64
    batches: int = 150
    warmup: int = 10
    stage_samples: int = 2000


DRY = Sizes(qa_videos=48, frames=4, dims=(8, 6), moment_videos=12, clips=(3, 9), clip_dim=6, steps=5,
            pca_dim=4, shard_size=8, batch=4, batches=3, warmup=1, stage_samples=8)  # fmt: skip

NAMES = ("appearance", "motion")
POOL = 4096  # random rows the synthetic features are drawn from (cheap to generate, never all equal)


# ============================================================================================ data
class _Synthetic(Mapping):
    """Video id -> features, made on demand (``write_feature_dir`` writes one shard at a time)."""

    def __init__(self, count: int, make) -> None:
        self.ids = [f"video{i:06d}" for i in range(count)]
        self.make = make

    def __len__(self) -> int:
        return len(self.ids)

    def __iter__(self) -> Iterator[str]:
        return iter(self.ids)

    def __getitem__(self, video_id: str) -> dict[str, np.ndarray]:
        return self.make(np.random.default_rng(int(video_id[5:])))


def _pool(width: int, dtype: str, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((POOL, width), dtype=np.float32).astype(dtype)


def _reuse(out: Path, params: dict) -> bool:
    """Whether ``out`` holds a complete directory generated with ``params`` (else it is removed)."""
    try:
        reader = FeatureReader(out)
    except Exception:  # absent or unreadable: generate anew
        shutil.rmtree(out, ignore_errors=True)
        return False
    if reader.provenance.get("data_bench") == params and len(reader) == params["videos"]:
        return True
    shutil.rmtree(out)
    return False


def make_qa_features(out: Path, sizes: Sizes) -> Path:
    """An ``mspan`` directory of ``sizes.qa_videos`` videos (``appearance`` / ``motion`` (frames, dim))."""
    params = {"videos": sizes.qa_videos, "frames": sizes.frames, "dims": list(sizes.dims),
              "dtype": sizes.dtype, "shard_size": sizes.shard_size, "v": 1}  # fmt: skip
    if _reuse(out, params):
        return out
    widths = dict(zip(NAMES, sizes.dims, strict=True))
    pools = {name: _pool(d, sizes.dtype, seed) for seed, (name, d) in enumerate(widths.items())}

    def make(rng: np.random.Generator) -> dict[str, np.ndarray]:
        return {name: pool[rng.integers(0, POOL, sizes.frames)] for name, pool in pools.items()}

    outputs = {name: {"shape": [sizes.frames, d], "dtype": sizes.dtype} for name, d in widths.items()}
    provenance = {"data_bench": params, "weights": "random"}
    return write_feature_dir(out, "mspan", _Synthetic(sizes.qa_videos, make), outputs=outputs,
                             shard_size=sizes.shard_size, provenance=provenance)


def make_moment_features(out: Path, sizes: Sizes) -> Path:
    """A ``cmin`` directory of ``sizes.moment_videos`` videos (ragged ``clips`` (L, clip_dim))."""
    params = {"videos": sizes.moment_videos, "clips": list(sizes.clips), "dim": sizes.clip_dim,
              "dtype": sizes.dtype, "shard_size": sizes.shard_size, "v": 1}  # fmt: skip
    if _reuse(out, params):
        return out
    pool = _pool(sizes.clip_dim, sizes.dtype, 7)

    def make(rng: np.random.Generator) -> dict[str, np.ndarray]:
        count = int(rng.integers(sizes.clips[0], sizes.clips[1] + 1))
        return {"clips": pool[rng.integers(0, POOL, count)]}

    outputs = {"clips": {"shape": [None, sizes.clip_dim], "dtype": sizes.dtype}}
    provenance = {"data_bench": params, "weights": "random"}
    return write_feature_dir(out, "cmin", _Synthetic(sizes.moment_videos, make), outputs=outputs,
                             shard_size=sizes.shard_size, provenance=provenance)


def qa_split(video_ids: list[str], seed: int = 0) -> EncodedSplit:
    """One open-ended question (3..14 tokens) per video, as ``pipelines.text.prepare_qa`` encodes them."""
    rng = np.random.default_rng(seed)
    q = len(video_ids)
    lens = rng.integers(3, 15, q)
    questions = rng.integers(2, 5000, (q, 14)) * (np.arange(14) < lens[:, None])
    return EncodedSplit(qids=[f"q{i}" for i in range(q)], video_ids=list(video_ids), qtypes=["what"] * q,
                        questions=questions.astype(np.int64), question_len=lens.astype(np.int64),
                        candidates=None, candidates_len=None, answers=rng.integers(0, 1000, q),
                        answer_text=["a"] * q)  # fmt: skip


def moment_split(reader: FeatureReader, sizes: Sizes, seed: int = 0) -> EncodedMoments:
    """Four queries (of 6..20 tokens) per video (ActivityNet Captions has 3.7), moments inside its duration
    (one clip = 0.5 s)."""
    rng = np.random.default_rng(seed)
    vids = [v for v in reader.ids for _ in range(4)]
    q = len(vids)
    lens = rng.integers(6, 21, q)
    clips = {v: int(np.random.default_rng(int(v[5:])).integers(sizes.clips[0], sizes.clips[1] + 1))
             for v in reader.ids}  # the first draw of make_moment_features' generator
    duration = np.array([0.5 * clips[v] for v in vids])
    start = rng.uniform(0, 0.7, q) * duration
    return EncodedMoments(qids=[f"m{i}" for i in range(q)], video_ids=vids, query_text=["q"] * q,
                          queries=(rng.integers(2, 5000, (q, 20)) * (np.arange(20) < lens[:, None])),
                          query_len=lens, start_s=start, end_s=start + rng.uniform(0.1, 0.3, q) * duration,
                          duration_s=duration)  # fmt: skip


# ============================================================================================ datasets
def qa_dataset(out: Path, sizes: Sizes, *, standardize: bool) -> tuple[QADataset, QACollate]:
    reader = FeatureReader(out)
    stats = None
    if standardize:  # per-channel statistics of the first 500 videos stand in for the training split's
        stats = feature_statistics(reader, reader.ids[:500], ("appearance", "motion"))
    ds = QADataset(qa_split(reader.ids), reader, feature_keys=("appearance", "motion"), feature_stats=stats)
    return ds, QACollate()


def moment_dataset(out: Path, sizes: Sizes) -> tuple[MomentDataset, MomentCollate]:
    reader = FeatureReader(out)
    split = moment_split(reader, sizes)
    stats = feature_statistics(reader, reader.ids[:200], ("clips",))["clips"]
    rng = np.random.default_rng(0)  # a random orthonormal projection costs what a fitted PCA costs
    components = np.linalg.qr(rng.standard_normal((sizes.clip_dim, sizes.clip_dim)))[0][:, : sizes.pca_dim]
    projection = Projection(np.zeros(sizes.clip_dim), components)
    ds = MomentDataset(split, [[] for _ in range(len(split))], {}, reader, num_steps=sizes.steps,
                       projection=projection, feature_stats=stats)  # fmt: skip
    return ds, MomentCollate()


# ============================================================================================ timing
def drop_page_cache(out: Path) -> None:
    """Ask the kernel to forget the cached pages of every shard under ``out`` (``--cold``)."""
    for path in sorted((out / SHARD_DIR).glob("*.h5")):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def batch_bytes(batch: Mapping) -> int:
    return sum(v.numel() * v.element_size() for v in batch.values() if isinstance(v, torch.Tensor))


def loader_rate(ds, collate, *, workers: int, sizes: Sizes, seed: int, device: str = "cpu") -> dict:
    """Samples/s of the training loader over ``sizes.batches`` batches after ``sizes.warmup`` batches; on
    CUDA with pinned memory and each batch copied to the device, as the training loop does."""
    if hasattr(ds, "_cache"):  # a fresh epoch's dataset: nothing cached yet
        ds._cache, ds._cached_bytes = {}, 0
    gen = torch.Generator().manual_seed(seed)
    sampler = torch.utils.data.RandomSampler(ds, generator=gen)
    cuda = device.startswith("cuda")
    loader = _loader(ds, batch_size=sizes.batch, sampler=sampler, collate=collate,
                     cfg=SimpleNamespace(num_workers=workers), pin=cuda, generator=gen)
    it = iter(loader)

    def take() -> int:
        batch = next(it)
        if cuda:
            batch = {k: v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v
                     for k, v in batch.items()}  # fmt: skip
        return batch_bytes(batch)

    batches = min(sizes.batches, len(ds) // sizes.batch - sizes.warmup)  # within one epoch
    for _ in range(sizes.warmup):
        take()
    if cuda:
        torch.cuda.synchronize(device)
    pids = [p.pid for p in getattr(it, "_workers", [])]  # the worker processes (none in-process)
    start, cpu, work = time.perf_counter(), time.process_time(), cpu_seconds(pids)
    delivered = sum(take() for _ in range(batches))
    if cuda:
        torch.cuda.synchronize(device)
    wall = time.perf_counter() - start
    main_cpu = time.process_time() - cpu
    work = cpu_seconds(pids) - work if pids else main_cpu  # None without /proc
    n = batches * sizes.batch
    return {"samples_per_s": n / wall, "delivered": delivered / n, "main_cpu": main_cpu / wall, "samples": n,
            "per_cpu_s": n / work if work else None}


def cpu_seconds(pids: list[int]) -> float | None:
    """CPU seconds the processes ``pids`` (all their threads) have run, from Linux's
    ``/proc/PID/task/TID/schedstat`` (nanoseconds; None where it is missing). Samples per CPU-second of
    the loading processes hardly depend on what else runs on the machine: N free cores deliver about N
    times that many samples per second."""
    total = 0
    try:
        for pid in pids:
            for task in os.listdir(f"/proc/{pid}/task"):
                with contextlib.suppress(FileNotFoundError), open(f"/proc/{pid}/task/{task}/schedstat",
                                                                   encoding="ascii") as fh:  # fmt: skip
                    total += int(fh.read().split()[0])  # time on a CPU, ns (a thread may have ended)
    except (OSError, IndexError, ValueError):
        return None
    return total / 1e9


def stage_rates(ds, collate, sizes: Sizes) -> dict:
    """Microseconds per sample of each stage in this process, on samples not read before."""
    rng = np.random.default_rng(1)
    idx = rng.permutation(len(ds))[: sizes.stage_samples]
    vids = [ds.split.video_ids[int(ds.indices[i])] for i in idx]
    reader = ds.reader
    for v in reader.ids[:: sizes.shard_size]:  # each shard checked once, as in a worker after its first reads
        reader[v]
    out = {}
    start = time.perf_counter()
    for v in vids:
        reader[v]
    out["read"] = (time.perf_counter() - start) / len(vids) * 1e6
    if hasattr(ds, "_cache"):
        ds._cache, ds._cached_bytes = {}, 0
    start = time.perf_counter()
    items = [ds[int(i)] for i in idx]
    out["item"] = (time.perf_counter() - start) / len(idx) * 1e6
    start = time.perf_counter()
    for s in range(0, len(items) - sizes.batch + 1, sizes.batch):
        collate(items[s : s + sizes.batch])
    out["collate"] = (time.perf_counter() - start) / max(len(items) // sizes.batch * sizes.batch, 1) * 1e6
    return out


def stored_bytes(reader: FeatureReader) -> float:
    """Shard bytes on disk per video (features, ids and attributes together)."""
    total = sum(p.stat().st_size for p in (reader.out_dir / SHARD_DIR).glob("*.h5"))
    return total / max(len(reader), 1)


# ============================================================================================ main
def header(workdir: Path) -> str:
    model = "unknown CPU"
    if os.path.exists("/proc/cpuinfo"):
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            model = next((ln.split(":", 1)[1].strip() for ln in fh if ln.startswith("model name")), model)
    return (f"{dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC, {model} ({os.cpu_count()} CPUs), torch "
            f"{torch.__version__}, {torch.get_num_threads()} intra-op threads in the main process, load "
            f"average {os.getloadavg()[0]:.1f}, data under {workdir}, code from {ROOT}")  # fmt: skip


def run(kind: str, ds, collate, *, out: Path, sizes: Sizes, workers: list[int], cold: bool) -> None:
    today = dt.date.today().isoformat()
    stored = stored_bytes(ds.reader)
    for i, w in enumerate(workers):
        if cold:
            drop_page_cache(out)
        r = loader_rate(ds, collate, workers=w, sizes=sizes, seed=i)
        per = r["samples_per_s"] / max(w, 1)
        per_cpu = f"{r['per_cpu_s']:.0f}" if r["per_cpu_s"] else "-"
        cache = "cold" if cold else "warm"
        print(f"| {today} | {kind} | {len(ds.reader):,} videos, {stored / 1024:.0f} KiB stored / video | "
              f"{w} | {sizes.batch} | {cache} | {r['samples_per_s']:.0f} | {per:.0f} | "
              f"{r['delivered'] / 1024:.0f} KiB | {r['main_cpu']:.2f} | {per_cpu} |", flush=True)  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dry-run", action="store_true", help="tiny data, a few batches (checks it runs)")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/vqa-data-bench"),
                        help="where the synthetic feature directories are generated and kept")
    parser.add_argument("--only", choices=["qa", "moment"], action="append", help="one dataset (repeatable)")
    parser.add_argument("--workers", default=None,
                        help="comma-separated worker counts (default: 0, 1 and one per core)")
    parser.add_argument("--batches", type=int, default=None, help="timed batches per row")
    parser.add_argument("--videos", type=int, default=None, help="qa: videos in the synthetic directory")
    parser.add_argument("--no-standardize", action="store_true", help="qa: features as stored")
    parser.add_argument("--cold", action="store_true",
                        help="drop the shards from the page cache before each row")
    parser.add_argument("--no-stages", action="store_true", help="skip the per-stage timing")
    parser.add_argument("--stage-samples", type=int, default=None, help="samples the stage timing reads")
    parser.add_argument("--delete", action="store_true", help="remove the generated directories and exit")
    args = parser.parse_args(argv)
    if args.delete:
        for name in ("qa", "moment", "dry-qa", "dry-moment"):
            shutil.rmtree(args.workdir / name, ignore_errors=True)
        print(f"removed the generated data under {args.workdir}")
        return 0
    sizes = DRY if args.dry_run else Sizes()
    if args.batches:
        sizes = dataclasses.replace(sizes, batches=args.batches)
    if args.videos:
        sizes = dataclasses.replace(sizes, qa_videos=args.videos)
    if args.stage_samples:
        sizes = dataclasses.replace(sizes, stage_samples=args.stage_samples)
    workers = sorted({0, 1, os.cpu_count() or 1})
    if args.workers:
        workers = [int(w) for w in args.workers.split(",")]
    prefix = "dry-" if args.dry_run else ""
    kinds = args.only or ["qa", "moment"]
    print(f"\n{'DRY RUN (tiny data, figures meaningless): ' if args.dry_run else ''}{header(args.workdir)}\n")
    print("| date | dataset | data | workers | batch | page cache | samples/s | per worker | delivered / "
          "sample | main process CPU | samples per loading CPU-second |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|---|---|", flush=True)
    datasets = {}
    if "qa" in kinds:
        start = time.perf_counter()
        out = make_qa_features(args.workdir / f"{prefix}qa", sizes)
        made = time.perf_counter() - start
        datasets["qa"] = (out, *qa_dataset(out, sizes, standardize=not args.no_standardize), made)
    if "moment" in kinds:
        start = time.perf_counter()
        out = make_moment_features(args.workdir / f"{prefix}moment", sizes)
        datasets["moment"] = (out, *moment_dataset(out, sizes), time.perf_counter() - start)
    for kind, (out, ds, collate, _) in datasets.items():
        run(kind, ds, collate, out=out, sizes=sizes, workers=workers, cold=args.cold)
    if not args.no_stages:
        print("\nOne process, each stage alone (microseconds per sample):")
        for kind, (_, ds, collate, made) in datasets.items():
            s = stage_rates(ds, collate, sizes)
            std = " + standardise" if kind == "qa" and not args.no_standardize else ""
            print(f"- {kind}: read {s['read']:.0f} (FeatureReader), item {s['item']:.0f} (read + check + "
                  f"float32{std}"
                  f"{' + PCA + resample' if kind == 'moment' else ''}), collate {s['collate']:.0f}; "
                  f"data generated or checked in {made:.0f} s", flush=True)  # fmt: skip
    print(f"\nload average at the end {os.getloadavg()[0]:.1f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
