"""The Ray backend: streaming-generator decode tasks and inference actors on a Ray runtime.

The only module of the toolkit that imports Ray; ``extract.engine.run`` imports it only when a run has work
for Ray to do. Start-up (telemetry off, loopback only, quiet notices) and the reasons are in
docs/architecture.md, "Extraction engine"; placement on a cluster in docs/cluster.md.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
from collections.abc import Callable
from typing import Any

import ray
from ray.exceptions import GetTimeoutError, LocalRayletDiedError, RayError, RayTaskError
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from extract.engine.job import BackendError, EngineConfig, FeatureSetSpec, load_models
from extract.engine.placement import ActorPlacement, NodeInfo, plan_actors
from extract.engine.stream import decode_items

# ============================================================================================ runtime set-up
#: Ray settings for an offline research run; each is only a default (a variable the user set wins):
#: no usage telemetry (opt in with RAY_USAGE_STATS_ENABLED=1), no start-up notices a user cannot act on
RAY_ENV_DEFAULTS = {"RAY_USAGE_STATS_ENABLED": "0", "RAY_DISABLE_DOCKER_CPU_WARNING": "1"}
#: Ray loggers whose start-up notices are not actionable here (shown again with --debug logging)
_QUIET_RAY_LOGGERS = ("ray._private.authentication", "ray._private.usage")


def quiet_ray() -> None:
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


def loopback_only() -> Callable[[], None]:
    """Make the local runtime about to start listen on 127.0.0.1 only; returns the function undoing it.

    A user who set :data:`LOOPBACK_ENV` keeps their choice. Undone once the runtime stops, so that a later
    ``ray.init(address=...)`` in the same process advertises an address other nodes can reach.
    """
    if LOOPBACK_ENV in os.environ:
        return lambda: None
    os.environ[LOOPBACK_ENV] = "0"
    # Ray reads the variable into this constant when it is imported, which has happened already
    from ray._private import ray_constants

    previous = getattr(ray_constants, "ENABLE_RAY_CLUSTER", None)
    if previous is not None:
        ray_constants.ENABLE_RAY_CLUSTER = False

    def undo() -> None:
        os.environ.pop(LOOPBACK_ENV, None)
        if previous is not None:
            ray_constants.ENABLE_RAY_CLUSTER = previous

    return undo


def actor_runtime_env(placement: ActorPlacement, wait_policy: str | None) -> dict[str, Any]:
    """Ray options giving a CPU inference actor ``OMP_WAIT_POLICY`` (a value the user exported wins).

    With OpenMP's default policy torch's threads spin at every barrier; on a node whose cores the decode
    tasks share, a thread waiting for a descheduled sibling burns the core a decode task needs (measured
    in docs/benchmarks.md, "Ray pipeline efficiency"). ``passive`` makes them sleep instead.
    """
    if placement.num_gpus or not wait_policy:
        return {}
    policy = os.environ.get("OMP_WAIT_POLICY", wait_policy)
    return {"runtime_env": {"env_vars": {"OMP_WAIT_POLICY": policy}}}


def alive_nodes() -> list[NodeInfo]:
    return [
        NodeInfo(n["NodeID"], int(n["Resources"].get("CPU", 0)), int(n["Resources"].get("GPU", 0)))
        for n in ray.nodes()
        if n.get("Alive")
    ]


# ============================================================================================ worker side
def _node_label() -> str:
    """``IP/node-id`` of the Ray node running the caller (both parts: local test nodes share an IP)."""
    ctx = ray.get_runtime_context()
    return f"{ray.util.get_node_ip_address()}/{ctx.get_node_id()[:12]}"


_FEATURE_SET_CACHE: dict[FeatureSetSpec, Any] = {}


def _cached_feature_set(spec: FeatureSetSpec):
    """One FeatureSet per spec per worker process (decode tasks reuse it across videos)."""
    fs = _FEATURE_SET_CACHE.get(spec)
    if fs is None:
        fs = spec.build()
        _FEATURE_SET_CACHE[spec] = fs
    return fs


def _ray_decode(spec: FeatureSetSpec, video_id: str, path: str):
    yield from decode_items(_cached_feature_set(spec), video_id, path, node=_node_label())


class InferWorker:
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
        load_models(self.fs)

    def infer(self, *chunks: dict) -> list[dict]:
        return self.fs.infer(list(chunks))

    def ping(self) -> bool:
        return True

    def where(self) -> dict[str, Any]:
        """Where this actor runs: node label, the device it claimed, the GPUs Ray gave it."""
        return {
            "node": _node_label(),
            "device": self.device,
            "gpu_ids": [str(g) for g in ray.get_gpu_ids()],
            "visible": os.environ.get("CUDA_VISIBLE_DEVICES"),
        }


# ============================================================================================ backend
def check_reachable(address: str, timeout_s: float = 5.0) -> None:
    """A BackendError naming ``address`` when nothing listens at its HOST:PORT: Ray itself retries an
    unreachable cluster without end. ``auto`` and client (``ray://``) addresses are left to Ray."""
    if address == "auto" or "://" in address:
        return
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit():
        raise BackendError(f"cannot join the Ray cluster at {address}: expected HOST:PORT or 'auto' "
                           "(--address or RAY_ADDRESS)")
    try:
        socket.create_connection((host, int(port)), timeout=timeout_s).close()
    except OSError as err:
        raise BackendError(f"cannot join the Ray cluster at {address}: nothing answers there ({err}); start "
                           "its head (ray start --head) or correct --address / RAY_ADDRESS") from err


class RayBackend:
    """Streaming-generator decode tasks and inference actors on a Ray runtime."""

    eager_dispatch = True

    def __init__(
        self, spec: FeatureSetSpec, options: Any, config: EngineConfig, *, claim: Callable | None = None
    ) -> None:
        self.ray = ray
        self._started = False
        self._undo_loopback: Callable[[], None] = lambda: None
        self.omp_wait_policy = config.omp_wait_policy
        if not ray.is_initialized():
            self._start_runtime(config)
        total_cpus, device, gpu = self._check_resources(options)
        nodes = alive_nodes()
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

    def _start_runtime(self, config: EngineConfig) -> None:
        """Start a local runtime (loopback only), or join the cluster at ``config.address``."""
        quiet_ray()
        init_kwargs: dict[str, Any] = {"include_dashboard": False, "logging_level": logging.WARNING}
        if config.address is not None:
            check_reachable(config.address)
            init_kwargs["address"] = config.address
        else:  # a local runtime: nothing else joins it, so it listens on loopback only
            # "local": a new runtime even when another one (a `ray start`, another user's job) runs on this
            # machine; ray.init() without an address would join that one instead.
            init_kwargs["address"] = "local"
            self._undo_loopback = loopback_only()
            if config.num_cpus is not None:
                init_kwargs["num_cpus"] = int(config.num_cpus)
        try:
            ray.init(**init_kwargs)
        except (ConnectionError, RuntimeError, ValueError) as err:
            self._undo_loopback()
            where = f"join the Ray cluster at {config.address}" if config.address else "start Ray"
            raise BackendError(f"cannot {where}: {err}") from err
        self._started = True

    def _check_resources(self, options: Any) -> tuple[int, str, bool]:
        """(the cluster's CPUs, the device asked for, whether it is a GPU), or a BackendError saying what
        the cluster lacks."""
        resources = ray.cluster_resources()
        if int(resources.get("CPU", 0)) < 1:
            self.shutdown()
            raise BackendError("the Ray cluster has no CPU to decode videos on; give it CPUs (--num-cpus)")
        device = str(getattr(options, "device", "cpu"))
        gpu = device.startswith("cuda")
        if gpu and int(resources.get("GPU", 0)) < 1:
            self.shutdown()
            raise BackendError(
                "--device cuda but the Ray cluster reports no GPU; "
                "use --device cpu or join a cluster with GPUs"
            )
        return int(resources["CPU"]), device, gpu

    def _start_actor(self, placement: ActorPlacement, spec, device: str, retries: int, claim):
        cls = ray.remote(InferWorker).options(
            max_restarts=retries,
            max_task_retries=retries,
            num_cpus=placement.num_cpus,
            num_gpus=placement.num_gpus,
            # soft: a restarted actor whose node was lost goes to another node
            scheduling_strategy=NodeAffinitySchedulingStrategy(placement.node_id, soft=True),
            **actor_runtime_env(placement, self.omp_wait_policy),
        )
        return cls.remote(spec, placement.threads, device, claim)

    def _wait_for_actors(self, spec: FeatureSetSpec, timeout: float) -> None:
        """Every actor placed and its models loaded within ``timeout`` s, or a BackendError saying why."""
        try:
            ray.get([a.ping.remote() for a in self.actors], timeout=timeout)
        except GetTimeoutError as err:
            need = sorted({(p.num_cpus, p.num_gpus) for p in self.placements})
            wanted = ", ".join(f"{{CPU: {c:g}, GPU: {g}}}" for c, g in need)
            have = {k: v for k, v in ray.available_resources().items() if k in ("CPU", "GPU")}
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
        """Per actor: node, device and GPUs (``InferWorker.where``)."""
        return ray.get([a.where.remote() for a in self.actors])

    def is_lost(self, err: BaseException) -> bool:
        """True for errors of the cluster (a node, worker, actor or object lost), not of the video."""
        if isinstance(err, RayTaskError):
            return isinstance(getattr(err, "cause", None), RayError)
        return isinstance(err, RayError)

    def is_gone(self, err: BaseException) -> bool:
        """True when the driver's own Ray node died: the whole cluster is gone, retrying cannot help."""
        return isinstance(err, LocalRayletDiedError) or isinstance(
            getattr(err, "cause", None), LocalRayletDiedError
        )

    def start_decode(self, video_id: str, path: str):
        return self._decode.remote(self.spec, video_id, path)

    def next_item(self, stream) -> tuple[dict, Any]:
        header = ray.get(next(stream))
        payload = next(stream) if header["kind"] == "chunk" else None
        return header, payload

    def submit_infer(self, worker: int, payloads: list) -> Any:
        return self.actors[worker].infer.remote(*payloads)

    def wait(self, streams: list, futures: list, timeout: float) -> tuple[list, list]:
        pending = list(streams) + list(futures)
        if not pending:
            return [], []
        ready, _ = ray.wait(pending, num_returns=1, timeout=timeout)
        if ready:
            ready, _ = ray.wait(pending, num_returns=len(pending), timeout=0)
        ready_set = set(ready)
        return [s for s in streams if s in ready_set], [f for f in futures if f in ready_set]

    def get_infer(self, future: Any) -> list[dict]:
        return ray.get(future)

    def release(self, payload: Any) -> None:
        return None

    def shutdown(self) -> None:
        for actor in getattr(self, "actors", []):
            with contextlib.suppress(Exception):  # best effort while tearing down
                ray.kill(actor)
        if self._started:
            ray.shutdown()
            self._started = False
            self._undo_loopback()
