"""The extraction pipeline: CPU decode workers, model actors, shard writing, resume, failure records.

Design (details and the reasons in docs/architecture.md, "Extraction engine"):

- One **scheduler** loop in the driver owns all state: which videos are being decoded, the decoded chunks
  waiting for a model, the batches in flight, the per-video partial outputs and the per-shard results.
- Decoding runs ``FeatureSet.decode`` in CPU **tasks** (Ray streaming-generator tasks, one per video) that
  yield bounded chunks; inference runs ``FeatureSet.infer`` in **actors** (one per GPU of the cluster, or one
  CPU actor) on batches of chunks from many videos. Chunks go from decode tasks to actors by object
  reference; the driver only ever fetches small headers and the (small) feature outputs.
- **Backpressure**: at most ``max_active_decodes`` videos are being decoded, at most ``max_buffered_chunks``
  decoded chunks exist (waiting or in inference), and each actor has at most two batches queued, so memory
  is bounded by the configuration, not by the number of videos.
- A video's outputs are combined with ``FeatureSet.finalize`` once its decode finished and every chunk came
  back; a shard is written (atomically) once each of its planned videos succeeded or failed, then the
  manifest is rewritten (atomically).
- **Resume**: complete shard files are never redone unless they fail the integrity check (missing, other
  size or ids, or a changed checksum: then they are extracted again and reported); a shard file found
  without its manifest update (crash between the two renames) is adopted from its own attributes; a lost
  manifest is rebuilt from the plan; stale temporary files are removed (``extract/manifest.py``).
- **Failures**: a decode error (``VideoDecodeError``) or any error while decoding, inferring or finalizing
  one video is recorded (video id, path, reason) and the run goes on. Ray retries crashed decode tasks
  (``max_retries``) and restarts crashed actors (``max_restarts`` / ``max_task_retries``). A failed batch of
  several videos is split and retried one video at a time, so one bad video cannot fail its neighbours.
- ``backend="local"`` runs the very same scheduler with in-process decode and inference (tests, debugging).

Crash injection for tests: the environment variable ``VQA_EXTRACT_CRASH`` = ``after-shard:N`` kills the
process with SIGKILL right after the N-th shard file of this run was renamed into place (before the manifest
records it); ``in-shard:N`` kills it while the N-th shard is still under its temporary name.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import signal
import sys
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from extract.manifest import (
    ShardProblem,
    clean_output,
    identity_differences,
    load_manifest,
    mark_complete,
    new_manifest,
    plan_shards,
    reconcile,
    record_run,
    refresh_counts,
    remove_temporaries,
    save_manifest,
    shard_context,
    shard_stamp,
)
from extract.shards import (
    MANIFEST_NAME,
    SHARD_DIR,
    FeatureSpec,
    ShardWriter,
    mentions_random_weights,
    normalize_outputs,
)
from pipelines.atomic import DirectoryInUseError, directory_lock
from pipelines.paths import UnsafePathError, is_within, resolve_under

__all__ = [
    "EngineConfig",
    "ExtractionJob",
    "BackendError",
    "OutputInUseError",
    "ResumeMismatchError",
    "RunSummary",
    "run_extraction",
]

log = logging.getLogger(__name__)

CRASH_ENV = "VQA_EXTRACT_CRASH"
LOCK_NAME = ".vqa-extract.lock"
#: an inference call gathers chunks worth about this many forward passes of ``batch_frames`` images, so
#: the padding of a call's last, partial forward pass (feature sets pad it for batch-independent values)
#: is amortised
CALL_FORWARDS = 16


class ResumeMismatchError(RuntimeError):
    """The output directory holds a run made with other options; the message lists the differences."""


class OutputInUseError(DirectoryInUseError):
    """Another vqa-extract process is writing the same output directory."""


class BackendError(RuntimeError):
    """The models could not be loaded, or Ray could not be started / joined (the message says why)."""


def _load_models(fs) -> None:
    """Load a feature set's backbones now (fail fast on missing weights) when it exposes them."""
    roles = getattr(fs, "roles", None)
    if roles and hasattr(fs, "backbone"):
        for role in roles:
            fs.backbone(role)


# ============================================================================================ job and config
@dataclass(frozen=True)
class FeatureSetSpec:
    """How every process builds the same FeatureSet: ``builder(name, options)`` (picklable)."""

    name: str
    options: Any
    builder: Callable[[str, Any], Any] | None = None

    def on_device(self, device: str) -> FeatureSetSpec:
        """This spec with ``options.device`` set to ``device`` (the one an inference actor claimed)."""
        if getattr(self.options, "device", device) == device:
            return self
        return dataclasses.replace(self, options=dataclasses.replace(self.options, device=device))

    def build(self):
        if self.builder is not None:
            return self.builder(self.name, self.options)
        from extract.featuresets import build_feature_set

        return build_feature_set(self.name, self.options)


_FEATURE_SET_CACHE: dict[FeatureSetSpec, Any] = {}


def _cached_feature_set(spec: FeatureSetSpec):
    """One FeatureSet per spec per worker process (decode tasks reuse it across videos)."""
    fs = _FEATURE_SET_CACHE.get(spec)
    if fs is None:
        fs = spec.build()
        _FEATURE_SET_CACHE[spec] = fs
    return fs


@dataclass(frozen=True)
class VideoItem:
    """One planned video: id, path, and a failure reason known before decoding (``"missing"``) or None."""

    video_id: str
    path: str
    known_failure: str | None = None


@dataclass
class ExtractionJob:
    """What to extract and where.

    Args:
        out_dir: the output directory (manifest.json + shards/).
        feature_set: feature-set name (``extract.featuresets.FEATURE_SETS``).
        options: a frozen options dataclass (``FeatureOptions``).
        videos: the videos to extract (``VideoRef``-like objects with ``video_id`` and ``path``).
        root: the dataset root; every video path must lie under it, every id must stay under it.
        missing: video id -> reason for videos known to be absent (recorded as failures, never decoded).
        source: JSON-able description of where the videos came from (dataset, root, task, limit).
        shard_size: videos per shard.
        overwrite: delete an existing output (manifest and shards) first instead of resuming.
        builder: ``builder(name, options) -> FeatureSet``; default ``extract.featuresets.build_feature_set``.
            It must be a module-level function when the Ray backend is used.
    """

    out_dir: Path
    feature_set: str
    options: Any
    videos: Sequence[Any]
    root: Path | None = None
    missing: Mapping[str, str] = field(default_factory=dict)
    source: Mapping[str, Any] = field(default_factory=dict)
    shard_size: int = 256
    overwrite: bool = False
    builder: Callable[[str, Any], Any] | None = None


@dataclass(frozen=True)
class EngineConfig:
    """How to run.

    Args:
        backend: ``"ray"`` (local runtime, or the cluster at ``address``) or ``"local"`` (in-process).
        address: ``None`` starts a local Ray runtime; ``"auto"`` or ``"HOST:PORT"`` joins a cluster.
        num_cpus: CPUs of the local Ray runtime (default: all).
        progress: show the tqdm progress bar.
        threads: torch threads of a CPU inference actor (default: the runtime's CPUs).
        max_active_decodes: videos decoded at once (default: 2 per decode CPU).
        max_buffered_chunks: decoded chunks alive at once (default: from workers and decode CPUs).
        retries: Ray task retries and actor restarts; also how often a video whose node or worker was lost
            is extracted again before it is recorded as failed.
        workers: CPU inference actors (default: one per node of the cluster, sized to that node's CPUs);
            with ``--device cuda`` at most this many GPU actors (default: one per GPU of every node).
        placement_timeout: seconds to wait for the inference actors to be placed and loaded before the run
            stops with a message naming the resources it waited for.
        omp_wait_policy: ``OMP_WAIT_POLICY`` of CPU inference actors (None: OpenMP's default, spinning
            threads); an ``OMP_WAIT_POLICY`` exported by the user wins.
    """

    backend: str = "ray"
    address: str | None = None
    num_cpus: int | None = None
    progress: bool = True
    threads: int | None = None
    max_active_decodes: int | None = None
    max_buffered_chunks: int | None = None
    retries: int = 3
    workers: int | None = None
    placement_timeout: float = 300.0
    omp_wait_policy: str | None = "passive"


@dataclass
class RunSummary:
    """What a run did; ``exit_code`` is 0 when no video failed, 3 otherwise."""

    out_dir: Path
    feature_set: str
    planned: int
    done: int
    failed: int
    done_this_run: int
    failed_this_run: int
    skipped_shards: int
    shards: int
    frames: int
    wall_s: float
    random_weights: bool = False
    failures: list[dict[str, str]] = field(default_factory=list)
    #: seconds from the start until the first video of this run was done (startup and model loading)
    first_result_s: float | None = None
    #: how it ran, e.g. "ray, 2 inference actor(s) on GPU, 6 decode CPU(s)" or "local (in-process)"
    backend: str = ""
    #: complete shards that failed the integrity check at the start and were extracted again
    reextracted: list[ShardProblem] = field(default_factory=list)
    #: the manifest was missing and was rebuilt from the plan and the shard files
    rebuilt_manifest: bool = False

    @property
    def exit_code(self) -> int:
        return 3 if self.failed else 0

    def format(self) -> str:
        processed = self.done_this_run + self.failed_this_run
        rate = processed / self.wall_s if self.wall_s > 0 else 0.0
        fps = self.frames / self.wall_s if self.wall_s > 0 else 0.0
        lines = [
            f"vqa-extract: {self.feature_set} features -> {self.out_dir}",
            f"  videos: {self.done} done, {self.failed} failed, {self.planned} planned "
            f"({self.shards} shards, {self.skipped_shards} already complete before this run)",
            f"  this run: {self.done_this_run} done, {self.failed_this_run} failed in {self.wall_s:.1f} s "
            f"({rate:.2f} videos/s, {fps:.1f} frames/s)",
        ]
        if self.backend:
            lines.append(f"  backend: {self.backend}")
        if self.rebuilt_manifest:
            lines.append(f"  {MANIFEST_NAME} was missing: rebuilt from the plan and the shard files")
        for problem in self.reextracted:
            lines.append(f"  DAMAGED shard extracted again: {problem}")
        if self.failed:
            where = self.out_dir / MANIFEST_NAME
            lines.append(f'  {self.failed} video(s) FAILED; reasons in {where} ("failures"):')
            for failure in self.failures[:10]:
                lines.append(f"    {failure['video_id']}: {failure['reason']}")
            if len(self.failures) > 10:
                lines.append(f"    ... and {len(self.failures) - 10} more")
        if self.random_weights:
            lines.append("  WARNING: RANDOM backbone weights were used; not research features")
        return "\n".join(lines)


# ============================================================================================ decode items
def _count_frames(chunk: Mapping[str, np.ndarray]) -> int:
    """Frames in a chunk: leading dims of each uint8 stack ((N, H, W, 3) -> N, (N, T, H, W, 3) -> N*T)."""
    frames = 0
    for value in chunk.values():
        is_image = isinstance(value, np.ndarray) and value.dtype == np.uint8 and value.ndim >= 4
        if is_image and value.shape[-1] == 3:
            frames += int(np.prod(value.shape[:-3]))
    return frames


def _decode_items(fs, video_id: str, path: str, node: str | None = None) -> Iterator[dict]:
    """Run ``fs.decode`` and yield the stream the scheduler reads.

    For every chunk: a header ``{"kind": "chunk", "seq", "frames"}`` then the chunk itself; at the end
    ``{"kind": "done", "chunks": n}`` or, on any error, ``{"kind": "failed", "reason": ...}``; on a
    cluster the final header also names the ``node`` that decoded the video.
    """
    payload_next = False
    for item in _decode_stream(fs, video_id, path):
        if not payload_next and node is not None and item["kind"] != "chunk":
            item = {**item, "node": node}
        payload_next = not payload_next and item.get("kind") == "chunk"
        yield item


def _decode_stream(fs, video_id: str, path: str) -> Iterator[dict]:
    from extract.video import VideoDecodeError

    n = 0
    try:
        for chunk in fs.decode(video_id, Path(path)):
            yield {"kind": "chunk", "seq": n, "frames": _count_frames(chunk)}
            yield chunk
            n += 1
    except VideoDecodeError as err:
        yield {"kind": "failed", "reason": err.reason}
        return
    except Exception as err:  # noqa: BLE001 - recorded as this video's failure; the run goes on
        yield {"kind": "failed", "reason": f"decoding raised {type(err).__name__}: {err}"}
        return
    if n == 0:
        yield {"kind": "failed", "reason": "the decoder produced no frames"}
    else:
        yield {"kind": "done", "chunks": n}


def _node_label() -> str:
    """``IP/node-id`` of the Ray node running the caller (both parts: local test nodes share an IP)."""
    import ray

    ctx = ray.get_runtime_context()
    return f"{ray.util.get_node_ip_address()}/{ctx.get_node_id()[:12]}"


def _ray_decode(spec: FeatureSetSpec, video_id: str, path: str):
    yield from _decode_items(_cached_feature_set(spec), video_id, path, node=_node_label())


class _InferWorker:
    """Inference actor body: one FeatureSet, models loaded on the first batch (or by ``warmup``)."""

    def __init__(
        self,
        spec: FeatureSetSpec,
        torch_threads: int | None = None,
        device: str = "cpu",
        claim: Callable[[str], str] | None = None,
    ) -> None:
        if torch_threads:
            import torch

            torch.set_num_threads(int(torch_threads))
        from extract.accel import claim_device  # the one CUDA-only step here; tests pass a CPU stand-in

        self.device = (claim or claim_device)(device)
        self.fs = spec.on_device(self.device).build()
        _load_models(self.fs)

    def infer(self, *chunks: dict) -> list[dict]:
        return self.fs.infer(list(chunks))

    def ping(self) -> bool:
        return True

    def where(self) -> dict[str, Any]:
        """Where this actor runs: node label, the device it claimed, the GPUs Ray gave it."""
        import ray

        return {
            "node": _node_label(),
            "device": self.device,
            "gpu_ids": [str(g) for g in ray.get_gpu_ids()],
            "visible": os.environ.get("CUDA_VISIBLE_DEVICES"),
        }


# ============================================================================================ placement
@dataclass(frozen=True)
class NodeInfo:
    """One alive node of the cluster: Ray node id and its CPU / GPU resources."""

    node_id: str
    cpus: int
    gpus: int = 0


@dataclass(frozen=True)
class ActorPlacement:
    """One inference actor: the node it is placed on (soft: a restart may go elsewhere) and what it holds."""

    node_id: str
    num_cpus: float
    num_gpus: int
    threads: int | None


def plan_actors(
    nodes: Sequence[NodeInfo], *, gpu: bool, workers: int | None = None, threads: int | None = None
) -> list[ActorPlacement]:
    """Where the inference actors go.

    GPU: one actor per GPU of every node (at most ``workers``), each holding that GPU and one CPU when
    its node has a CPU left over for decoding. CPU: one actor per node (or ``workers`` actors spread round
    robin over the nodes, biggest first); the actors of a node share its CPUs minus the quarter (at least
    one) kept for decode tasks, and run ``threads`` torch threads (default: the node's CPUs / actors).
    """
    if gpu:
        out = []
        for node in nodes:
            cpus = 1 if node.cpus > node.gpus else 0
            out += [ActorPlacement(node.node_id, cpus, 1, threads) for _ in range(node.gpus)]
        return out[:workers] if workers else out
    usable = sorted((n for n in nodes if n.cpus >= 1), key=lambda n: -n.cpus)
    count = workers or len(usable)
    per_node = {n.node_id: 0 for n in usable}
    for i in range(count):
        per_node[usable[i % len(usable)].node_id] += 1
    out = []
    for node in usable:
        k = per_node[node.node_id]
        if not k:
            continue
        # at least one CPU of the node stays free for decode tasks: on 1 CPU an actor reserves none
        # (an actor holding the only CPU would leave every decode task waiting forever)
        reserve = (node.cpus - max(1, node.cpus // 4)) / k
        out += [ActorPlacement(node.node_id, reserve, 0, threads or max(1, node.cpus // k)) for _ in range(k)]
    return out


def _alive_nodes(ray) -> list[NodeInfo]:
    return [
        NodeInfo(n["NodeID"], int(n["Resources"].get("CPU", 0)), int(n["Resources"].get("GPU", 0)))
        for n in ray.nodes()
        if n.get("Alive")
    ]


# ============================================================================================ backends
#: Ray settings for an offline research run; each is only a default (a variable the user set wins):
#: no usage telemetry (opt in with RAY_USAGE_STATS_ENABLED=1), no start-up notices a user cannot act on
RAY_ENV_DEFAULTS = {"RAY_USAGE_STATS_ENABLED": "0", "RAY_DISABLE_DOCKER_CPU_WARNING": "1"}
#: Ray loggers whose start-up notices are not actionable here (shown again with --debug logging)
_QUIET_RAY_LOGGERS = ("ray._private.authentication", "ray._private.usage")


def _quiet_ray() -> None:
    """Apply :data:`RAY_ENV_DEFAULTS` and silence Ray's unactionable start-up notices."""
    for key, value in RAY_ENV_DEFAULTS.items():
        os.environ.setdefault(key, value)
    for name in _QUIET_RAY_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)


#: Ray reads this variable when it is imported. Set to "0" a node takes 127.0.0.1 as its address instead of
#: the machine's outward one, and Ray's gRPC servers (GCS, raylet, every worker, the runtime-env agent) bind
#: 127.0.0.1 exactly when their node's address is 127.0.0.1. Ray names the variable for Windows and macOS,
#: where "0" is its default; on Linux the default is "1" (every interface).
LOOPBACK_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"


def _loopback_only() -> Callable[[], None]:
    """Make the local runtime about to start listen on 127.0.0.1 only; returns the function undoing it.

    A user who set :data:`LOOPBACK_ENV` keeps their choice. Undone once the runtime stops, so that a later
    ``ray.init(address=...)`` in the same process advertises an address other nodes can reach.
    """
    if LOOPBACK_ENV in os.environ:
        return lambda: None
    os.environ[LOOPBACK_ENV] = "0"
    # Ray reads the variable into this constant when it is imported, which may have happened already
    from ray._private import ray_constants

    previous = getattr(ray_constants, "ENABLE_RAY_CLUSTER", None)
    if previous is not None:
        ray_constants.ENABLE_RAY_CLUSTER = False

    def undo() -> None:
        os.environ.pop(LOOPBACK_ENV, None)
        if previous is not None:
            ray_constants.ENABLE_RAY_CLUSTER = previous

    return undo


def _actor_runtime_env(placement: ActorPlacement, wait_policy: str | None) -> dict[str, Any]:
    """Ray options giving a CPU inference actor ``OMP_WAIT_POLICY`` (a value the user exported wins).

    With OpenMP's default policy torch's threads spin at every barrier; on a node whose cores the decode
    tasks share, a thread waiting for a descheduled sibling burns the core a decode task needs (measured
    in docs/benchmarks.md, "Ray pipeline efficiency"). ``passive`` makes them sleep instead.
    """
    if placement.num_gpus or not wait_policy:
        return {}
    policy = os.environ.get("OMP_WAIT_POLICY", wait_policy)
    return {"runtime_env": {"env_vars": {"OMP_WAIT_POLICY": policy}}}


class _LocalStream:
    def __init__(self, items: Iterator[dict]) -> None:
        self.items = items


class _LocalFuture:
    def __init__(self, seq: int, payloads: list) -> None:
        self.seq = seq
        self.payloads = payloads


class _LocalBackend:
    """In-process decode and inference; futures run when collected (oldest first)."""

    eager_dispatch = False

    def __init__(self, spec: FeatureSetSpec, fs) -> None:
        try:
            _load_models(fs)
        except Exception as err:  # noqa: BLE001 - re-raised with context
            raise BackendError(f"cannot load the models of feature set {spec.name!r}: {err}") from err
        self.fs = fs
        self.num_workers = 1
        self.decode_slots = 1
        self._seq = 0
        import torch

        self.description = f"local (in-process decode and inference, {torch.get_num_threads()} torch threads)"

    def start_decode(self, video_id: str, path: str) -> _LocalStream:
        return _LocalStream(_decode_items(self.fs, video_id, path))

    def next_item(self, stream: _LocalStream) -> tuple[dict, Any]:
        header = next(stream.items)
        payload = next(stream.items) if header["kind"] == "chunk" else None
        return header, payload

    def submit_infer(self, worker: int, payloads: list) -> Any:
        self._seq += 1
        return _LocalFuture(self._seq, payloads)

    def wait(self, streams: list, futures: list, timeout: float) -> tuple[list, list]:
        if futures:
            return [], [min(futures, key=lambda f: f.seq)]
        return list(streams[:1]), []

    def get_infer(self, future: Any) -> list[dict]:
        payloads, future.payloads = future.payloads, []
        return self.fs.infer(payloads)

    def release(self, payload: Any) -> None:
        return None

    def is_lost(self, err: BaseException) -> bool:
        return False

    def is_gone(self, err: BaseException) -> bool:
        return False

    def shutdown(self) -> None:
        return None


class _RayBackend:
    """Streaming-generator decode tasks and inference actors on a Ray runtime."""

    eager_dispatch = True

    def __init__(
        self, spec: FeatureSetSpec, options: Any, config: EngineConfig, *, claim: Callable | None = None
    ) -> None:
        import ray

        self.ray = ray
        self._started = False
        self._undo_loopback: Callable[[], None] = lambda: None
        self.omp_wait_policy = config.omp_wait_policy
        if not ray.is_initialized():
            _quiet_ray()
            init_kwargs: dict[str, Any] = {"include_dashboard": False, "logging_level": logging.WARNING}
            if config.address is not None:
                init_kwargs["address"] = config.address
            else:  # a local runtime: nothing else joins it, so it listens on loopback only
                self._undo_loopback = _loopback_only()
                if config.num_cpus is not None:
                    init_kwargs["num_cpus"] = int(config.num_cpus)
            try:
                ray.init(**init_kwargs)
            except (ConnectionError, RuntimeError, ValueError) as err:
                self._undo_loopback()
                where = f"join the Ray cluster at {config.address}" if config.address else "start Ray"
                raise BackendError(f"cannot {where}: {err}") from err
            self._started = True
        resources = ray.cluster_resources()
        if int(resources.get("CPU", 0)) < 1:
            self.shutdown()
            raise BackendError("the Ray cluster has no CPU to decode videos on; give it CPUs (--num-cpus)")
        total_cpus = int(resources["CPU"])
        device = str(getattr(options, "device", "cpu"))
        gpu = device.startswith("cuda")
        if gpu and int(resources.get("GPU", 0)) < 1:
            self.shutdown()
            raise BackendError(
                "--device cuda but the Ray cluster reports no GPU; "
                "use --device cpu or join a cluster with GPUs"
            )
        nodes = _alive_nodes(ray)
        self.placements = plan_actors(nodes, gpu=gpu, workers=config.workers, threads=config.threads)
        self.num_workers = len(self.placements)
        reserved = sum(p.num_cpus for p in self.placements)
        self.decode_slots = max(1, int(total_cpus - reserved))
        self.spec = spec
        retries = int(config.retries)
        self.actors = [self._start_actor(p, spec, device, retries, claim) for p in self.placements]
        self._decode = ray.remote(_ray_decode).options(
            num_cpus=1,
            num_returns="streaming",
            max_retries=retries,
            _generator_backpressure_num_objects=4,
        )
        self._wait_for_actors(spec, config.placement_timeout)
        threads = "/".join(str(t) for t in sorted({p.threads or 0 for p in self.placements}))
        where = "GPU" if gpu else f"CPU ({threads} torch threads)"
        used = len({p.node_id for p in self.placements})
        self.description = (
            f"ray, {self.num_workers} inference actor(s) on {where} over {used} of {len(nodes)} node(s), "
            f"{self.decode_slots} decode CPU(s)"
        )

    def _start_actor(self, placement: ActorPlacement, spec, device: str, retries: int, claim):
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        cls = self.ray.remote(_InferWorker).options(
            max_restarts=retries,
            max_task_retries=retries,
            num_cpus=placement.num_cpus,
            num_gpus=placement.num_gpus,
            # soft: a restarted actor whose node was lost goes to another node
            scheduling_strategy=NodeAffinitySchedulingStrategy(placement.node_id, soft=True),
            **_actor_runtime_env(placement, self.omp_wait_policy),
        )
        return cls.remote(spec, placement.threads, device, claim)

    def _wait_for_actors(self, spec: FeatureSetSpec, timeout: float) -> None:
        """Every actor placed and its models loaded within ``timeout`` s, or a BackendError saying why."""
        from ray.exceptions import GetTimeoutError

        try:
            self.ray.get([a.ping.remote() for a in self.actors], timeout=timeout)
        except GetTimeoutError as err:
            need = sorted({(p.num_cpus, p.num_gpus) for p in self.placements})
            wanted = ", ".join(f"{{CPU: {c:g}, GPU: {g}}}" for c, g in need)
            have = {k: v for k, v in self.ray.available_resources().items() if k in ("CPU", "GPU")}
            self.shutdown()
            raise BackendError(
                f"waited {timeout:g} s for {len(self.actors)} inference actor(s) of feature set "
                f"{spec.name!r} needing {wanted} each to be placed and loaded; "
                f"the cluster has {have} available. "
                "Add nodes, lower --workers, or raise --placement-timeout"
            ) from err
        except Exception as err:  # noqa: BLE001 - an actor failed to start: usually its models did not load
            self.shutdown()
            raise BackendError(
                f"the inference actors of feature set {spec.name!r} failed to start: {err}"
            ) from err

    def where(self) -> list[dict[str, Any]]:
        """Per actor: node, device and GPUs (``_InferWorker.where``)."""
        return self.ray.get([a.where.remote() for a in self.actors])

    def is_lost(self, err: BaseException) -> bool:
        """True for errors of the cluster (a node, worker, actor or object lost), not of the video."""
        from ray.exceptions import RayError, RayTaskError

        if isinstance(err, RayTaskError):
            return isinstance(getattr(err, "cause", None), RayError)
        return isinstance(err, RayError)

    def is_gone(self, err: BaseException) -> bool:
        """True when the driver's own Ray node died: the whole cluster is gone, retrying cannot help."""
        from ray.exceptions import LocalRayletDiedError

        return isinstance(err, LocalRayletDiedError) or isinstance(
            getattr(err, "cause", None), LocalRayletDiedError
        )

    def start_decode(self, video_id: str, path: str):
        return self._decode.remote(self.spec, video_id, path)

    def next_item(self, stream) -> tuple[dict, Any]:
        header = self.ray.get(next(stream))
        payload = next(stream) if header["kind"] == "chunk" else None
        return header, payload

    def submit_infer(self, worker: int, payloads: list) -> Any:
        return self.actors[worker].infer.remote(*payloads)

    def wait(self, streams: list, futures: list, timeout: float) -> tuple[list, list]:
        pending = list(streams) + list(futures)
        if not pending:
            return [], []
        ready, _ = self.ray.wait(pending, num_returns=1, timeout=timeout)
        if ready:
            ready, _ = self.ray.wait(pending, num_returns=len(pending), timeout=0)
        ready_set = set(ready)
        return [s for s in streams if s in ready_set], [f for f in futures if f in ready_set]

    def get_infer(self, future: Any) -> list[dict]:
        return self.ray.get(future)

    def release(self, payload: Any) -> None:
        return None

    def shutdown(self) -> None:
        for actor in getattr(self, "actors", []):
            with contextlib.suppress(Exception):  # best effort while tearing down
                self.ray.kill(actor)
        if self._started:
            self.ray.shutdown()
            self._started = False
            self._undo_loopback()


# ============================================================================================ scheduler
@dataclass
class _VideoState:
    shard: int
    item: VideoItem
    chunks_total: int | None = None
    partials: dict[int, dict] = field(default_factory=dict)
    frames: int = 0
    finished: bool = False
    #: extractions of this video started before this one (a lost node or worker restarts a video)
    attempts: int = 0
    #: the node that decoded it (Ray backend)
    node: str | None = None


@dataclass
class _ShardState:
    index: int
    planned: list[str]
    remaining: int
    results: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)
    failures: dict[str, dict[str, str]] = field(default_factory=dict)
    nodes: dict[str, str] = field(default_factory=dict)


@dataclass
class _Chunk:
    video: _VideoState
    seq: int
    payload: Any
    frames: int
    isolated: bool = False


class _Scheduler:
    def __init__(
        self,
        *,
        backend,
        fs,
        outputs: dict[str, FeatureSpec],
        manifest: dict,
        out_dir: Path,
        options_json: dict,
        batch_frames: int,
        config: EngineConfig,
        items_by_id: dict[str, VideoItem],
    ) -> None:
        self.backend = backend
        self.fs = fs
        self.outputs = outputs
        self.manifest = manifest
        self.out_dir = out_dir
        self.options_json = options_json
        self.call_frames = max(1, int(batch_frames)) * CALL_FORWARDS
        workers = backend.num_workers
        self.max_active = config.max_active_decodes or max(2, 2 * backend.decode_slots)
        self.max_buffered = config.max_buffered_chunks or max(8, 4 * workers + 2 * self.max_active)
        self.progress_enabled = config.progress
        self.max_attempts = 1 + max(0, int(config.retries))
        self.items_by_id = items_by_id
        self.frames = 0
        self.done_this_run = 0
        self.failed_this_run = 0
        self.shards_written = 0
        self.first_settled: float | None = None
        self.crash = _parse_crash_env()

        self.shards: dict[int, _ShardState] = {}
        self.queue: deque[_VideoState] = deque()
        for index, entry in enumerate(manifest["shards"]):
            if entry["complete"]:
                continue
            state = _ShardState(index, list(entry["videos"]), len(entry["videos"]))
            self.shards[index] = state
            for video_id in entry["videos"]:
                self.queue.append(_VideoState(index, items_by_id[video_id]))
        self.total = len(self.queue)

    # -------------------------------------------------------------- main loop
    def run(self) -> None:
        from tqdm import tqdm

        self.bar = tqdm(
            total=self.total,
            unit="video",
            dynamic_ncols=True,
            disable=not self.progress_enabled,
            file=sys.stderr,
            desc="extract",
            smoothing=0.1,
        )
        self.t0 = time.monotonic()
        active: dict[Any, _VideoState] = {}  # stream -> video
        ready_chunks: deque[_Chunk] = deque()
        inflight: dict[Any, tuple[int, list[_Chunk]]] = {}
        load = [0] * self.backend.num_workers
        try:
            # videos known to be missing fail at once; shards made only of them are written at once
            for video in [v for v in self.queue if v.item.known_failure is not None]:
                self._fail(video, video.item.known_failure)
            self.queue = deque(v for v in self.queue if v.item.known_failure is None)

            while self.queue or active or ready_chunks or inflight:
                buffered = len(ready_chunks) + sum(len(c) for _, c in inflight.values())
                # 1. start decodes (bounded)
                while self.queue and len(active) < self.max_active and buffered < self.max_buffered:
                    video = self.queue.popleft()
                    active[self.backend.start_decode(video.item.video_id, video.item.path)] = video
                # 2. dispatch inference batches
                ready_frames = sum(c.frames for c in ready_chunks)
                can_consume = bool(active) and buffered < self.max_buffered
                for worker in sorted(range(len(load)), key=lambda w: load[w]):
                    if not ready_chunks or load[worker] >= 2:
                        continue
                    idle = self.backend.eager_dispatch and load[worker] == 0
                    if ready_frames < self.call_frames and can_consume and not idle:
                        continue
                    batch = self._take_batch(ready_chunks)
                    ready_frames -= sum(c.frames for c in batch)
                    future = self.backend.submit_infer(worker, [c.payload for c in batch])
                    inflight[future] = (worker, batch)
                    load[worker] += 1
                # 3. wait for something to happen
                buffered = len(ready_chunks) + sum(len(c) for _, c in inflight.values())
                streams = list(active) if buffered < self.max_buffered else []
                if not streams and not inflight:
                    if ready_chunks:
                        continue  # nothing in flight: the dispatch above sends what is buffered
                    if active:  # buffer full of nothing? cannot happen; consume anyway to make progress
                        streams = list(active)
                ready_streams, ready_futures = self.backend.wait(streams, list(inflight), timeout=1.0)
                for stream in ready_streams:
                    self._consume(stream, active, ready_chunks)
                for future in ready_futures:
                    worker, batch = inflight.pop(future)
                    load[worker] -= 1
                    self._collect(future, batch, ready_chunks)
                self._refresh_bar()
        finally:
            self.bar.close()

    def _take_batch(self, ready_chunks: deque[_Chunk]) -> list[_Chunk]:
        if ready_chunks[0].isolated:
            return [ready_chunks.popleft()]
        batch = [ready_chunks.popleft()]
        frames = batch[0].frames
        while (
            ready_chunks
            and not ready_chunks[0].isolated
            and frames + ready_chunks[0].frames <= self.call_frames
        ):
            chunk = ready_chunks.popleft()
            batch.append(chunk)
            frames += chunk.frames
        return batch

    def _consume(self, stream: Any, active: dict, ready_chunks: deque[_Chunk]) -> None:
        video = active[stream]
        try:
            header, payload = self.backend.next_item(stream)
        except StopIteration:
            header, payload = {"kind": "failed", "reason": "decode stream ended without a result"}, None
        except Exception as err:  # noqa: BLE001 - a crashed decode worker (after Ray's retries) fails this video
            if self.backend.is_gone(err):
                raise
            if self.backend.is_lost(err):
                del active[stream]
                self._retry(video, f"its decode worker was lost: {_short(err)}")
                return
            header, payload = {"kind": "failed", "reason": f"decode worker failed: {_short(err)}"}, None
        kind = header["kind"]
        if header.get("node"):
            video.node = header["node"]
        if kind == "chunk":
            if not video.finished:
                ready_chunks.append(_Chunk(video, header["seq"], payload, header["frames"]))
            return
        del active[stream]
        if kind == "failed":
            where = f" (on node {video.node})" if video.node else ""
            self._fail(video, header["reason"] + where)
        else:
            video.chunks_total = header["chunks"]
            self._maybe_finalize(video)

    def _collect(self, future: Any, batch: list[_Chunk], ready_chunks: deque[_Chunk]) -> None:
        try:
            partials = self.backend.get_infer(future)
            if len(partials) != len(batch):
                raise RuntimeError(f"infer returned {len(partials)} outputs for {len(batch)} chunks")
        except Exception as err:  # noqa: BLE001 - handled: split the batch, or fail the one video
            if self.backend.is_gone(err):
                raise
            if self.backend.is_lost(err):  # a node or actor went away: extract these videos again
                for chunk in batch:
                    self._retry(chunk.video, f"its inference worker was lost: {_short(err)}")
                return
            videos = {id(c.video) for c in batch}
            if len(videos) > 1:
                log.warning(
                    "inference failed on a batch of %d videos (%s); retrying them one by one",
                    len(videos),
                    _short(err),
                )
                for chunk in reversed(batch):
                    chunk.isolated = True
                    ready_chunks.appendleft(chunk)
                return
            video = batch[0].video
            if not video.finished:
                self._fail(video, f"inference failed: {_short(err)}")
            return
        for chunk, partial in zip(batch, partials, strict=True):
            video = chunk.video
            if video.finished:
                continue
            video.partials[chunk.seq] = partial
            video.frames += chunk.frames
            self.frames += chunk.frames
            self._maybe_finalize(video)

    def _maybe_finalize(self, video: _VideoState) -> None:
        if video.finished or video.chunks_total is None or len(video.partials) < video.chunks_total:
            return
        try:
            arrays = self.fs.finalize([video.partials[i] for i in range(video.chunks_total)])
            checked = {}
            for name, spec in self.outputs.items():
                if name not in arrays:
                    raise ValueError(f"finalize returned no {name!r}")
                array = spec.check(video.item.video_id, name, arrays[name])
                if array.dtype.kind == "f" and not np.isfinite(array).all():
                    raise ValueError(f"feature {name!r} holds NaN or infinite values")
                checked[name] = array
        except Exception as err:  # noqa: BLE001 - recorded as this video's failure
            self._fail(video, f"finalize failed: {_short(err)}")
            return
        video.finished = True
        video.partials = {}
        shard = self.shards[video.shard]
        shard.results[video.item.video_id] = checked
        if video.node:
            shard.nodes[video.item.video_id] = video.node
        self.done_this_run += 1
        self.bar.update(1)
        self._video_settled(shard)

    def _retry(self, video: _VideoState, reason: str) -> None:
        """Abandon this extraction of ``video`` (its late chunks are ignored) and queue it again, or fail it
        once it has been tried ``max_attempts`` times."""
        if video.finished:
            return
        if video.attempts + 1 >= self.max_attempts:
            self._fail(video, f"{reason} ({self.max_attempts} attempts)")
            return
        video.finished = True
        video.partials = {}
        log.warning("video %s: %s; extracting it again", video.item.video_id, reason)
        self.queue.appendleft(_VideoState(video.shard, video.item, attempts=video.attempts + 1))

    def _fail(self, video: _VideoState, reason: str) -> None:
        if video.finished:
            return
        video.finished = True
        video.partials = {}
        shard = self.shards[video.shard]
        shard.failures[video.item.video_id] = {
            "video_id": video.item.video_id,
            "path": video.item.path,
            "reason": reason,
        }
        self.failed_this_run += 1
        self.bar.update(1)
        self._video_settled(shard)

    def _video_settled(self, shard: _ShardState) -> None:
        if self.first_settled is None:
            self.first_settled = time.monotonic()
        shard.remaining -= 1
        if shard.remaining == 0:
            self._write_shard(shard)

    def _write_shard(self, shard: _ShardState) -> None:
        entry = self.manifest["shards"][shard.index]
        ids = [v for v in shard.planned if v in shard.results]
        failures = [shard.failures[v] for v in shard.planned if v in shard.failures]
        writer = ShardWriter(
            self.out_dir / SHARD_DIR / entry["name"],
            feature_set=self.manifest["feature_set"],
            outputs=self.outputs,
            provenance=self.manifest["provenance"],
            options=self.options_json,
            **shard_context(self.manifest, shard.index),
        )
        number = self.shards_written + 1
        hook = None
        if self.crash == ("in-shard", number):

            def hook(_tmp: Path) -> None:
                _kill_self()

        writer.write(ids, [shard.results[v] for v in ids], failures, before_rename=hook)
        self.shards_written = number
        if self.crash == ("after-shard", number):
            _kill_self()
        mark_complete(self.manifest, shard.index, ids, failures, shard_stamp(writer.path))
        if shard.nodes:  # which node decoded each video (informational; not part of the resume identity)
            entry["nodes"] = {v: shard.nodes[v] for v in ids if v in shard.nodes}
        save_manifest(self.out_dir, self.manifest)
        del self.shards[shard.index]

    def _refresh_bar(self) -> None:
        elapsed = time.monotonic() - self.t0
        if elapsed > 0 and self.progress_enabled:
            self.bar.set_postfix(
                failed=self.failed_this_run, frames_s=f"{self.frames / elapsed:.1f}", refresh=False
            )


def _short(err: BaseException, limit: int = 300) -> str:
    text = f"{type(err).__name__}: {err}".strip().replace("\n", " ")
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _parse_crash_env() -> tuple[str, int] | None:
    value = os.environ.get(CRASH_ENV)
    if not value:
        return None
    kind, _, number = value.partition(":")
    if kind not in ("after-shard", "in-shard") or not number.isdigit():
        raise ValueError(f"{CRASH_ENV}={value!r}: expected 'after-shard:N' or 'in-shard:N'")
    return kind, int(number)


def _kill_self() -> None:
    sys.stdout.flush()
    sys.stderr.flush()
    os.kill(os.getpid(), signal.SIGKILL)


# ============================================================================================ preparation
def _jsonable(obj: Any, what: str) -> Any:
    """``obj`` as it reads back from JSON (tuples become lists), so stored and fresh values compare equal."""
    try:
        return json.loads(json.dumps(obj, sort_keys=True))
    except (TypeError, ValueError) as err:
        raise TypeError(f"the feature set's {what} is not JSON-serialisable: {err}") from err


def _options_json(options: Any) -> dict[str, Any]:
    if hasattr(options, "record"):  # FeatureOptions: leaves out later fields while unset
        data = options.record()
    elif dataclasses.is_dataclass(options):
        data = dataclasses.asdict(options)
    elif isinstance(options, Mapping):
        data = dict(options)
    else:
        raise TypeError(f"options must be a dataclass or a mapping, got {type(options).__name__}")
    return json.loads(json.dumps(data, sort_keys=True, default=str))


def _build_plan(job: ExtractionJob) -> tuple[list[list[str]], dict[str, VideoItem]]:
    root = Path(job.root) if job.root is not None else None
    items: dict[str, VideoItem] = {}
    for ref in job.videos:
        video_id = str(ref.video_id)
        if root is not None:
            # the id must not name anything outside the root (it becomes a key others may join onto paths);
            # checked as written: links the user placed inside the root are followed (pipelines/paths.py)
            resolve_under(root, video_id, source=f"video id {video_id!r}")
            path = Path(ref.path)
            if not is_within(root, path if path.is_absolute() else root / path):
                raise UnsafePathError(
                    f"video {video_id!r}: path {ref.path} lies outside the dataset root {root}; refused"
                )
        if video_id in items:
            raise ValueError(
                f"video id {video_id!r} is listed twice ({items[video_id].path} and {ref.path}); "
                "ids must be unique"
            )
        known = job.missing.get(video_id)
        items[video_id] = VideoItem(video_id, str(ref.path), known)
    return plan_shards(list(items), job.shard_size), items


def _record_end(out_dir: Path, manifest: dict[str, Any], err: BaseException) -> None:
    """Record in the manifest how a run ended early (best effort: on a full disk the manifest keeps saying
    the run never ended, which ``vqa-extract info`` reports as killed)."""
    interrupted = isinstance(err, KeyboardInterrupt | SystemExit)
    record_run(manifest, "interrupted" if interrupted else "failed", None if interrupted else err)
    with contextlib.suppress(OSError):
        save_manifest(out_dir, manifest)


@contextlib.contextmanager
def _output_lock(out_dir: Path) -> Iterator[None]:
    message = f"{out_dir} is being written by another vqa-extract process; wait for it or use another --out"
    with directory_lock(out_dir, LOCK_NAME, error=OutputInUseError, message=message):
        yield


# ============================================================================================ entry point
def run_extraction(job: ExtractionJob, config: EngineConfig = EngineConfig()) -> RunSummary:
    """Extract the features of ``job.videos`` into ``job.out_dir``, resuming a previous identical run.

    Args:
        job: what to extract (see :class:`ExtractionJob`).
        config: how (see :class:`EngineConfig`).

    Returns:
        The run summary (``summary.exit_code`` is 3 when some video failed).

    Raises:
        ResumeMismatchError: ``out_dir`` holds a run with different options (use a new out_dir or overwrite).
        OutputInUseError: another process writes ``out_dir``.
        UnsafePathError: a video id or path would leave the dataset root.
    """
    if config.backend not in ("ray", "local"):
        raise ValueError(f"unknown backend {config.backend!r}; use 'ray' or 'local'")
    t0 = time.monotonic()
    out_dir = Path(job.out_dir)
    plan, items = _build_plan(job)
    spec = FeatureSetSpec(job.feature_set, job.options, job.builder)
    fs = spec.build()
    outputs = normalize_outputs(fs.outputs)
    # The feature set's resolved options (its default backbones and sizes filled in), as provenance has them.
    options_json = _options_json(getattr(fs, "options", job.options))
    try:
        provenance = _jsonable(fs.provenance(), "provenance")  # hashes the weight files
    except (OSError, RuntimeError) as err:  # e.g. weights not in the torch cache: the message says where
        raise BackendError(f"feature set {job.feature_set!r}: {err}") from err
    fresh = new_manifest(
        feature_set=job.feature_set,
        outputs=outputs,
        options=options_json,
        provenance=provenance,
        source=job.source,
        shard_size=job.shard_size,
        plan=[[(vid, items[vid].path) for vid in ids] for ids in plan],
    )
    random_weights = mentions_random_weights(provenance)
    with _output_lock(out_dir):
        if job.overwrite:
            clean_output(out_dir)
        rebuilt = False
        if (out_dir / MANIFEST_NAME).exists():
            manifest = load_manifest(out_dir)
            legacy = fs.legacy_options() if hasattr(fs, "legacy_options") else None
            diffs = identity_differences(manifest, fresh, legacy=legacy)
            if diffs:
                raise ResumeMismatchError(
                    f"{out_dir} already holds features made differently:\n  "
                    + "\n  ".join(diffs[:20])
                    + "\nuse a new --out, or --overwrite to replace them"
                )
        else:
            # a lost manifest is rebuilt from this run's plan; reconcile adopts the shards that belong to it
            shard_dir = out_dir / SHARD_DIR
            rebuilt = shard_dir.is_dir() and any(shard_dir.glob("*.h5"))
            if rebuilt:
                log.warning("%s is missing; rebuilding it from the plan and the shard files", MANIFEST_NAME)
            manifest = fresh
        remove_temporaries(out_dir)
        redo = reconcile(manifest, out_dir)
        skipped = manifest["counts"]["complete_shards"]
        record_run(manifest, "running")  # ended below; `vqa-extract info` tells a killed run by its absence
        save_manifest(out_dir, manifest)

        # A finished output needs no workers: do not start Ray just to find nothing to do.
        nothing_left = all(entry["complete"] for entry in manifest["shards"])
        backend = (
            _LocalBackend(spec, fs)
            if config.backend == "local" or nothing_left
            else _RayBackend(spec, job.options, config)
        )
        try:
            scheduler = _Scheduler(
                backend=backend,
                fs=fs,
                outputs=outputs,
                manifest=manifest,
                out_dir=out_dir,
                options_json=options_json,
                batch_frames=int(getattr(job.options, "batch_frames", 64) or 64),
                config=config,
                items_by_id=items,
            )
            try:
                scheduler.run()
            except Exception as err:
                if not backend.is_lost(err):
                    raise
                raise BackendError(
                    f"lost the Ray cluster ({_short(err)}); the {scheduler.shards_written} shard(s) written "
                    f"by this run are saved in {out_dir}: run the same command again to resume"
                ) from err
        except BaseException as err:
            _record_end(out_dir, manifest, err)
            raise
        finally:
            backend.shutdown()
        refresh_counts(manifest)
        record_run(manifest, "finished")
        save_manifest(out_dir, manifest)
    counts = manifest["counts"]
    return RunSummary(
        out_dir=out_dir,
        feature_set=job.feature_set,
        planned=counts["planned"],
        done=counts["done"],
        failed=counts["failed"],
        done_this_run=scheduler.done_this_run,
        failed_this_run=scheduler.failed_this_run,
        skipped_shards=skipped,
        shards=counts["shards"],
        frames=scheduler.frames,
        wall_s=time.monotonic() - t0,
        random_weights=random_weights,
        failures=list(manifest["failures"]),
        first_result_s=None if scheduler.first_settled is None else scheduler.first_settled - t0,
        backend="none: every shard was already complete" if nothing_left else backend.description,
        reextracted=redo,
        rebuilt_manifest=rebuilt,
    )
