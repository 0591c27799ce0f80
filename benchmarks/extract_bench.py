"""Extraction throughput and memory (run by hand; never part of the test suite).

On one set of generated videos (the 10-video set is the first 10 of the 100-video set) it measures:

1. decode-only: ``FeatureSet.decode`` of every video in one process (what one decode worker does);
2. model-only: ``FeatureSet.infer`` on the pre-decoded chunks, batched like the engine does, with the
   torch threads the engine gives its CPU inference actor (models loaded before timing);
3. the full pipeline (``run_extraction`` on the Ray backend, or ``--backend local``) for 10 and for 100
   videos, each in a fresh subprocess, with the peak resident memory of that process tree (the driver,
   and the Ray processes it starts) sampled every 0.1 s from /proc.

Pipeline throughput is reported twice: ``total`` = videos / wall time (Ray start-up and model loading
included) and ``steady`` = (videos - 1) / (wall - time to the first finished video), comparable with the
stage throughputs (which exclude start-up). Target: steady >= 0.8 of the slower stage; peak memory flat
from 10 to 100 videos.

``--nodes-row K`` adds a row for the smallest count run on a local multi-node Ray cluster
(``ray.cluster_utils.Cluster``: K raylets on this machine splitting ``--num-cpus`` between them, the
driver joining by address), beside the one-node row with the same total CPUs. On one machine this
measures the cost of the multi-node path (placement over nodes, cross-node object transfer, K actors
sharing the cores), not a speed-up: the nodes share the same cores.

    python benchmarks/extract_bench.py                                   # CPU, small backbones
    python benchmarks/extract_bench.py --device cuda --appearance resnet152 --motion r3d152_k700

Prints a markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np


# --------------------------------------------------------------------------------------------- videos
def make_videos(root: Path, n: int, *, frames: int, height: int, width: int, seed: int = 0) -> list[Path]:
    """``n`` mp4 files of moving noise-textured squares (deterministic); existing files are reused."""
    from pipelines.videowrite import write_video

    rng = np.random.default_rng(seed)
    paths = []
    for i in range(n):
        path = root / f"v{i:04d}.mp4"
        texture = rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8)
        if not path.exists():
            video = np.empty((frames, height, width, 3), np.uint8)
            for t in range(frames):
                video[t] = np.roll(texture, shift=(2 * t, 3 * t), axis=(0, 1))
            write_video(path, video, fps=25.0)
        paths.append(path)
    return paths


def subset_root(all_paths: list[Path], root: Path) -> Path:
    """A folder holding hard links to ``all_paths`` (a dataset root for the ``folder`` adapter)."""
    root.mkdir(parents=True, exist_ok=True)
    for path in all_paths:
        link = root / path.name
        if not link.exists():
            os.link(path, link)
    return root


# --------------------------------------------------------------------------------------------- memory
def _children_map() -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as fh:
                stat = fh.read()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    return children


def tree_rss_bytes(pid: int) -> int:
    """Resident memory of ``pid`` and all its descendants (bytes)."""
    children = _children_map()
    total, stack, page = 0, [pid], os.sysconf("SC_PAGE_SIZE")
    while stack:
        p = stack.pop()
        try:
            with open(f"/proc/{p}/statm") as fh:
                total += int(fh.read().split()[1]) * page
        except OSError:
            pass
        stack.extend(children.get(p, []))
    return total


def tree_cpu_seconds(pid: int, into: dict[int, tuple[str, float]]) -> None:
    """Record the CPU seconds (user + system) so far of ``pid`` and its descendants into ``into``
    (pid -> (process name, seconds)); sampled repeatedly, the last value of each process remains."""
    children, stack, tick = _children_map(), [pid], os.sysconf("SC_CLK_TCK")
    while stack:
        p = stack.pop()
        try:
            with open(f"/proc/{p}/stat") as fh:
                stat = fh.read()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        into[p] = (stat[stat.index("(") + 1 : stat.rindex(")")], (int(fields[11]) + int(fields[12])) / tick)
        stack.extend(children.get(p, []))


def run_with_peak_rss(
    cmd: list[str], env: dict, cpu: dict[int, tuple[str, float]] | None = None
) -> tuple[subprocess.CompletedProcess, int]:
    """Run ``cmd``; its peak tree RSS (bytes); with ``cpu``, also each process's CPU seconds (see
    :func:`tree_cpu_seconds`; a process living less than the 0.1 s sampling period may be missed)."""
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    peak = [0]
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], tree_rss_bytes(proc.pid))
            if cpu is not None:
                tree_cpu_seconds(proc.pid, cpu)
            time.sleep(0.1)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    out, err = proc.communicate()
    done.set()
    thread.join()
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err), peak[0]


# --------------------------------------------------------------------------------------------- stages
def feature_options(args):
    from extract.featuresets import FeatureOptions

    kw = {
        "appearance": args.appearance,
        "motion": args.motion,
        "image_size": args.image_size,
        "motion_size": args.motion_size,
        "weights": "random",
        "device": args.device,
        "batch_frames": args.batch_frames,
        "num_frames": args.num_frames,
        "clip_len": args.clip_len,
    }
    return FeatureOptions(**{k: v for k, v in kw.items() if v is not None})


def measure_stages(args, paths: list[Path], infer_threads: int) -> dict:
    import torch

    from extract.engine import CALL_FORWARDS
    from extract.featuresets import build_feature_set

    fs = build_feature_set(args.features, feature_options(args))
    t0 = time.perf_counter()
    chunks, frames = [], 0
    for path in paths:
        for chunk in fs.decode(path.stem, path):
            chunks.append(chunk)
            frames += sum(
                int(np.prod(v.shape[:-3]))
                for v in chunk.values()
                if isinstance(v, np.ndarray) and v.dtype == np.uint8 and v.ndim >= 4
            )
    decode_s = time.perf_counter() - t0

    torch.set_num_threads(infer_threads)
    fs.infer(chunks[:1])  # load the models before timing
    batches, current, current_frames = [], [], 0
    per_chunk = frames / max(1, len(chunks))
    call_frames = fs_batch_frames(args) * CALL_FORWARDS  # the engine's inference call size
    for chunk in chunks:
        if current and current_frames + per_chunk > call_frames:
            batches.append(current)
            current, current_frames = [], 0
        current.append(chunk)
        current_frames += per_chunk
    if current:
        batches.append(current)
    t0 = time.perf_counter()
    for batch in batches:
        fs.infer(batch)
    model_s = time.perf_counter() - t0
    n = len(paths)
    return {
        "decode_vps": n / decode_s,
        "decode_fps": frames / decode_s,
        "model_vps": n / model_s,
        "model_fps": frames / model_s,
        "frames_per_video": frames / n,
    }


def fs_batch_frames(args) -> int:
    return int(args.batch_frames or 64)


# --------------------------------------------------------------------------------------------- pipeline
def pipeline_child(args) -> None:
    """Run the engine once (in this subprocess) and print its summary as JSON."""
    from extract.engine import EngineConfig, ExtractionJob, run_extraction
    from pipelines.datasets import get_dataset

    adapter = get_dataset("folder")(args.root)
    job = ExtractionJob(
        out_dir=Path(args.out),
        feature_set=args.features,
        options=feature_options(args),
        videos=adapter.videos(),
        root=Path(args.root),
        source={"dataset": "folder"},
        shard_size=args.shard_size,
        overwrite=True,
    )
    cluster = None
    if args.nodes > 1:  # a local multi-node cluster splitting the CPUs; the driver joins it by address
        from ray.cluster_utils import Cluster

        per_node = max(1, args.num_cpus // args.nodes)
        cluster = Cluster(
            initialize_head=True, head_node_args={"num_cpus": per_node, "include_dashboard": False}
        )
        for _ in range(args.nodes - 1):
            cluster.add_node(num_cpus=per_node)
        cluster.wait_for_nodes()
        config = EngineConfig(address=cluster.address, progress=False)
    else:
        policy = None if args.omp_wait_policy == "default" else args.omp_wait_policy
        config = EngineConfig(
            backend=args.backend, num_cpus=args.num_cpus, progress=False, omp_wait_policy=policy
        )
    try:
        summary = run_extraction(job, config)
    finally:
        if cluster is not None:
            cluster.shutdown()
    print(
        json.dumps(
            {
                "done": summary.done,
                "failed": summary.failed,
                "wall_s": summary.wall_s,
                "first_result_s": summary.first_result_s,
                "frames": summary.frames,
            }
        )
    )


def measure_pipeline(args, root: Path, out: Path, nodes: int = 1) -> dict:
    args = argparse.Namespace(**{**vars(args), "nodes": nodes})
    cmd = [sys.executable, __file__, "_pipeline", "--root", str(root), "--out", str(out)]
    for key in (
        "features",
        "appearance",
        "motion",
        "image_size",
        "motion_size",
        "device",
        "batch_frames",
        "num_frames",
        "clip_len",
        "num_cpus",
        "backend",
        "shard_size",
        "nodes",
        "omp_wait_policy",
    ):
        value = getattr(args, key)
        if value is not None:
            cmd += [f"--{key.replace('_', '-')}", str(value)]
    env = dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"))
    env.pop("OMP_WAIT_POLICY", None)  # the engine sets its actors' policy (--omp-wait-policy)
    cpu: dict[int, tuple[str, float]] = {}
    result, peak = run_with_peak_rss(cmd, env, cpu)
    if result.returncode != 0:
        raise RuntimeError(f"pipeline run failed ({result.returncode}):\n{result.stderr[-3000:]}")
    data = json.loads(result.stdout.strip().splitlines()[-1])
    n, wall, first = data["done"], data["wall_s"], data["first_result_s"] or 0.0
    data["total_vps"] = n / wall
    data["steady_vps"] = (n - 1) / (wall - first) if n > 1 and wall > first else float("nan")
    data["peak_rss_mb"] = peak / 2**20
    data["cpu_s"] = {}
    for name, seconds in cpu.values():  # CPU seconds by process kind (ray::_InferWorker, raylet, ...)
        data["cpu_s"][name] = data["cpu_s"].get(name, 0.0) + seconds
    return data


# --------------------------------------------------------------------------------------------- A/B
def measure_stages_child(args, root: Path, policy: str) -> dict:
    """:func:`measure_stages` in a fresh process whose OpenMP wait policy is ``policy`` ("default": unset)."""
    cmd = [sys.executable, __file__, "_stages", "--root", str(root), "--num-cpus", str(args.num_cpus)]
    for key in ("features", "appearance", "motion", "image_size", "motion_size", "device", "batch_frames",
                "num_frames", "clip_len"):  # fmt: skip
        value = getattr(args, key)
        if value is not None:
            cmd += [f"--{key.replace('_', '-')}", str(value)]
    env = dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"))
    env.pop("OMP_WAIT_POLICY", None)
    if policy != "default":
        env["OMP_WAIT_POLICY"] = policy
    result = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if result.returncode != 0:
        raise RuntimeError(f"stage run failed ({result.returncode}):\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def run_ab(args, workdir: Path, all_paths: list[Path], counts: list[int]) -> None:
    """The inference actor's OpenMP wait policy, before (OpenMP's default: spinning threads) and after
    (``passive``), interleaved ``--ab`` times in one run: per round, each policy's model-only stage (its
    own process, the same policy) then its full pipeline. The ratio divides the pipeline's steady
    throughput by the slower stage at its best in that round (the faster of the two model-only runs), so
    both policies are compared against the same yardstick."""
    n = counts[-1]
    stage_root = subset_root(all_paths[: counts[0]], workdir / f"root{counts[0]}")
    root = subset_root(all_paths[:n], workdir / f"root{n}")
    policies = ("default", "passive")
    when = time.strftime("%F %H:%M")
    print(f"\nA/B of the CPU actor's OMP_WAIT_POLICY, {n} videos, {args.num_cpus} CPUs, {when}\n")
    print("| round | policy | model only (videos/s) | pipeline steady (videos/s) | vs best slower stage "
          "| CPU s/video (actor / decode / rest) | load avg |")  # fmt: skip
    print("|---|---|---|---|---|---|---|")
    for rnd in range(1, args.ab + 1):
        stages = {pol: measure_stages_child(args, stage_root, pol) for pol in policies}
        best = {k: max(st[k] for st in stages.values()) for k in ("model_vps", "decode_vps")}
        slower = min(best.values())
        for pol in policies:
            load = os.getloadavg()[0]
            res = measure_pipeline(argparse.Namespace(**{**vars(args), "omp_wait_policy": pol}), root,
                                   workdir / f"out-ab-{pol}")  # fmt: skip
            cpu = res["cpu_s"]
            actor = sum(v for k, v in cpu.items() if "InferWork" in k)
            decode = sum(v for k, v in cpu.items() if k.startswith("ray::_ray_dec") or k == "ray::IDLE")
            rest = sum(cpu.values()) - actor - decode
            print(
                f"| {rnd} | {pol} | {stages[pol]['model_vps']:.2f} | {res['steady_vps']:.2f} | "
                f"{res['steady_vps'] / slower:.2f} | {actor / n:.2f} / {decode / n:.2f} / {rest / n:.2f} | "
                f"{load:.1f}-{os.getloadavg()[0]:.1f} |",
                flush=True,
            )


# --------------------------------------------------------------------------------------------- main
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("mode", nargs="?", default="bench", choices=["bench", "_pipeline", "_stages"])
    parser.add_argument("--features", default="mspan")
    parser.add_argument("--appearance", default="resnet18")
    parser.add_argument("--motion", default="r3d_18")
    parser.add_argument("--image-size", type=int, default=112)
    parser.add_argument("--motion-size", type=int, default=112)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch-frames", type=int, default=64)
    parser.add_argument("--num-frames", type=int, default=None, help="mspan N (default 16)")
    parser.add_argument("--clip-len", type=int, default=None, help="motion window W (default 16)")
    parser.add_argument("--num-cpus", type=int, default=os.cpu_count())
    parser.add_argument("--backend", default="ray", choices=["ray", "local"])
    parser.add_argument("--shard-size", type=int, default=16)
    parser.add_argument("--counts", default="10,100", help="video counts of the pipeline runs")
    parser.add_argument("--frames", type=int, default=48, help="frames per generated video")
    parser.add_argument("--video-size", default="160x120", help="WxH of the generated videos")
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--root", default=None)
    parser.add_argument("--out", default=None)
    parser.add_argument("--nodes", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument(
        "--nodes-row", type=int, default=0, help="also run the smallest count on K local Ray nodes"
    )
    parser.add_argument(
        "--omp-wait-policy",
        default="passive",
        help="OMP_WAIT_POLICY of the Ray CPU inference actor ('default': OpenMP's own, as before 2026-12)",
    )
    parser.add_argument(
        "--ab",
        type=int,
        default=0,
        metavar="ROUNDS",
        help="instead of the table: the actor's wait policy before/after, interleaved ROUNDS times",
    )
    return parser


def run_table(args, workdir: Path, all_paths: list[Path], counts: list[int]) -> None:
    """The stages alone, the full pipeline at each count (and on K local nodes), printed as one table."""
    infer_threads = args.num_cpus or 1  # as the engine: its CPU inference actor runs torch on every core
    stages = measure_stages(args, all_paths[: counts[0]], infer_threads)
    rows = []
    for n in counts:
        root = subset_root(all_paths[:n], workdir / f"root{n}")
        res = measure_pipeline(args, root, workdir / f"out{n}")
        rows.append((n, res))
    multi = None
    if args.nodes_row > 1:
        root = subset_root(all_paths[: counts[0]], workdir / f"root{counts[0]}")
        multi = measure_pipeline(args, root, workdir / f"out{counts[0]}-nodes", nodes=args.nodes_row)
    print_table(args, workdir, counts, stages, rows, multi)


def print_table(args, workdir: Path, counts: list[int], stages: dict, rows: list, multi: dict | None) -> None:
    """The markdown table of docs/benchmarks.md: each stage alone, then the pipeline against the slower."""
    total_cpus = args.num_cpus or 1
    slower = min(stages["decode_vps"], stages["model_vps"])
    date = time.strftime("%Y-%m-%d")
    setting = (
        f"{args.features}, {args.appearance}@{args.image_size} + {args.motion}@{args.motion_size}, "
        f"{args.frames}-frame {args.video_size} mp4, {args.backend} backend, {total_cpus} CPUs, "
        f"{args.device}"
    )
    print(f"\nExtraction benchmark ({date}, {platform.processor() or platform.machine()}, {setting})\n")
    print("| stage | videos | videos/s | frames/s | peak RSS (MiB) | vs slower stage |")
    print("|---|---|---|---|---|---|")
    fpv = stages["frames_per_video"]
    print(
        f"| decode only (1 process) | {counts[0]} | {stages['decode_vps']:.2f} | "
        f"{stages['decode_fps']:.0f} | | |"
    )
    print(
        f"| model only ({total_cpus} threads, pre-decoded) | {counts[0]} | {stages['model_vps']:.2f} | "
        f"{stages['model_fps']:.0f} | | |"
    )
    for n, res in rows:
        print(
            f"| full pipeline, total | {n} | {res['total_vps']:.2f} | {res['total_vps'] * fpv:.0f} | "
            f"{res['peak_rss_mb']:.0f} | {res['total_vps'] / slower:.2f} |"
        )
        print(
            f"| full pipeline, steady | {n} | {res['steady_vps']:.2f} | {res['steady_vps'] * fpv:.0f} | "
            f"| {res['steady_vps'] / slower:.2f} |"
        )
    if multi is not None:
        one = rows[0][1]
        per = max(1, total_cpus // args.nodes_row)
        for kind in ("total", "steady"):
            print(
                f"| full pipeline, {kind}, {args.nodes_row} local nodes x {per} CPU | {counts[0]} | "
                f"{multi[kind + '_vps']:.2f} | {multi[kind + '_vps'] * fpv:.0f} | "
                f"{multi['peak_rss_mb']:.0f} | {multi[kind + '_vps'] / one[kind + '_vps']:.2f} vs 1 node |"
            )
    print(
        f"\nslower stage: {'decode' if stages['decode_vps'] < stages['model_vps'] else 'model'} "
        f"({slower:.2f} videos/s); frames per video fed to the models: {fpv:.0f}; workdir {workdir}"
    )


def main() -> None:
    args = build_parser().parse_args()
    if args.mode == "_pipeline":
        pipeline_child(args)
        return
    if args.mode == "_stages":
        paths = sorted(Path(args.root).glob("*.mp4"))
        print(json.dumps(measure_stages(args, paths, args.num_cpus or 1)))
        return
    counts = sorted(int(c) for c in args.counts.split(","))
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="extract-bench-"))
    width, height = (int(x) for x in args.video_size.split("x"))
    all_paths = make_videos(workdir / "videos", counts[-1], frames=args.frames, height=height, width=width)
    if args.ab:
        run_ab(args, workdir, all_paths, counts)
    else:
        run_table(args, workdir, all_paths, counts)

if __name__ == "__main__":
    main()
