"""What an extraction run is given and what it returns: the job, the engine's settings, the summary, errors.

Also ``FeatureSetSpec``: how every process (the driver, a decode task, an inference actor) builds the same
feature set. Nothing here starts work; ``extract.engine.run`` does.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from extract.manifest import MANIFEST_NAME, ShardProblem
from pipelines.atomic import DirectoryInUseError

#: the output directory's lock file (``flock``): a second writer is refused
LOCK_NAME = ".vqa-extract.lock"


# ============================================================================================ errors
class ResumeMismatchError(RuntimeError):
    """The output directory holds a run made with other options; the message lists the differences."""


class OutputInUseError(DirectoryInUseError):
    """Another vqa-extract process is writing the same output directory."""


class BackendError(RuntimeError):
    """The models could not be loaded, or Ray could not be started / joined (the message says why)."""


# ============================================================================================ feature set
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


def load_models(fs) -> None:
    """Load a feature set's backbones now (fail fast on missing weights) when it exposes them."""
    roles = getattr(fs, "roles", None)
    if roles and hasattr(fs, "backbone"):
        for role in roles:
            fs.backbone(role)


# ============================================================================================ job and config
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


# ============================================================================================ summary
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
