"""The entry point: ``run_extraction(job, config)`` plans the shards, checks or creates the manifest, picks a
backend and runs the scheduler under the output directory's lock.

Design (details and the reasons in docs/architecture.md, "Extraction engine"):

- One **scheduler** loop in the driver owns all state (``extract.engine.scheduler``).
- Decoding runs ``FeatureSet.decode`` in CPU **tasks** (Ray streaming-generator tasks, one per video) that
  yield bounded chunks; inference runs ``FeatureSet.infer`` in **actors** (one per GPU of the cluster, or one
  CPU actor) on batches of chunks from many videos (``extract.engine.ray_backend``, the only module that
  imports Ray; it is imported only when a run has work for Ray to do).
- **Backpressure**: at most ``max_active_decodes`` videos are being decoded, at most ``max_buffered_chunks``
  decoded chunks exist (waiting or in inference), and each actor has at most two batches queued, so memory
  is bounded by the configuration, not by the number of videos.
- **Resume**: complete shard files are never redone unless they fail the integrity check (missing, other
  size or ids, or a changed checksum: then they are extracted again and reported); a shard file found
  without its manifest update (crash between the two renames) is adopted from its own attributes; a lost
  manifest is rebuilt from the plan; stale temporary files are removed (``extract/manifest.py``).
- **Failures**: a decode error (``VideoDecodeError``) or any error while decoding, inferring or finalizing
  one video is recorded (video id, path, reason) and the run goes on (``extract.engine.scheduler``).
- ``backend="local"`` runs the very same scheduler with in-process decode and inference
  (``extract.engine.local_backend``: tests, debugging, and a run with nothing left to do).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from extract.engine.job import (
    LOCK_NAME,
    BackendError,
    EngineConfig,
    ExtractionJob,
    FeatureSetSpec,
    OutputInUseError,
    ResumeMismatchError,
    RunSummary,
    VideoItem,
)
from extract.engine.local_backend import LocalBackend
from extract.engine.scheduler import Backend, Scheduler, short
from extract.manifest import (
    MANIFEST_NAME,
    ShardProblem,
    clean_output,
    identity_differences,
    load_manifest,
    new_manifest,
    plan_shards,
    reconcile,
    record_run,
    refresh_counts,
    remove_temporaries,
    save_manifest,
)
from extract.shards import SHARD_DIR, FeatureSpec, mentions_random_weights, normalize_outputs
from pipelines.atomic import directory_lock
from pipelines.paths import UnsafePathError, is_within, resolve_under

log = logging.getLogger(__name__)


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


@dataclass
class _Prepared:
    """What the driver knows before it opens the output: the plan, the feature set, the fresh manifest."""

    spec: FeatureSetSpec
    fs: Any
    outputs: dict[str, FeatureSpec]
    options_json: dict[str, Any]
    items: dict[str, VideoItem]
    fresh: dict[str, Any]
    random_weights: bool


def _prepare(job: ExtractionJob) -> _Prepared:
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
    return _Prepared(spec, fs, outputs, options_json, items, fresh, mentions_random_weights(provenance))


def _open_manifest(out_dir: Path, prep: _Prepared) -> tuple[dict[str, Any], bool]:
    """The manifest to resume (refused when made differently) or the fresh one; whether it was rebuilt."""
    if (out_dir / MANIFEST_NAME).exists():
        manifest = load_manifest(out_dir)
        legacy = prep.fs.legacy_options() if hasattr(prep.fs, "legacy_options") else None
        diffs = identity_differences(manifest, prep.fresh, legacy=legacy)
        if diffs:
            raise ResumeMismatchError(
                f"{out_dir} already holds features made differently:\n  "
                + "\n  ".join(diffs[:20])
                + "\nuse a new --out, or --overwrite to replace them"
            )
        return manifest, False
    # a lost manifest is rebuilt from this run's plan; reconcile adopts the shards that belong to it
    shard_dir = out_dir / SHARD_DIR
    rebuilt = shard_dir.is_dir() and any(shard_dir.glob("*.h5"))
    if rebuilt:
        log.warning("%s is missing; rebuilding it from the plan and the shard files", MANIFEST_NAME)
    return prep.fresh, rebuilt


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


# ============================================================================================ running
def _make_backend(prep: _Prepared, job: ExtractionJob, config: EngineConfig, nothing_left: bool) -> Backend:
    """In-process for ``backend="local"`` and for a finished output (no need to start Ray); else Ray."""
    if config.backend == "local" or nothing_left:
        return LocalBackend(prep.spec, prep.fs)
    from extract.engine import ray_backend  # the one import of Ray, only when Ray has work to do

    return ray_backend.RayBackend(prep.spec, job.options, config)


def _schedule(
    prep: _Prepared, job: ExtractionJob, config: EngineConfig, manifest: dict, backend: Backend
) -> Scheduler:
    """Run the scheduler over the manifest's incomplete shards; a lost cluster becomes a BackendError."""
    out_dir = Path(job.out_dir)
    scheduler = Scheduler(
        backend=backend,
        fs=prep.fs,
        outputs=prep.outputs,
        manifest=manifest,
        out_dir=out_dir,
        options_json=prep.options_json,
        batch_frames=int(getattr(job.options, "batch_frames", 64) or 64),
        config=config,
        items_by_id=prep.items,
    )
    try:
        scheduler.run()
    except Exception as err:
        if not backend.is_lost(err):
            raise
        raise BackendError(
            f"lost the Ray cluster ({short(err)}); the {scheduler.shards_written} shard(s) written "
            f"by this run are saved in {out_dir}: run the same command again to resume"
        ) from err
    return scheduler


@dataclass
class _Outcome:
    manifest: dict[str, Any]
    scheduler: Scheduler
    backend: str
    skipped: int
    redo: list[ShardProblem]
    rebuilt: bool


def _run_locked(prep: _Prepared, job: ExtractionJob, config: EngineConfig) -> _Outcome:
    """Open (or create) the manifest, extract what is left, record how the run ended."""
    out_dir = Path(job.out_dir)
    if job.overwrite:
        clean_output(out_dir)
    manifest, rebuilt = _open_manifest(out_dir, prep)
    remove_temporaries(out_dir)
    redo = reconcile(manifest, out_dir)
    skipped = manifest["counts"]["complete_shards"]
    record_run(manifest, "running")  # ended below; `vqa-extract info` tells a killed run by its absence
    save_manifest(out_dir, manifest)

    # A finished output needs no workers: do not start Ray just to find nothing to do.
    nothing_left = all(entry["complete"] for entry in manifest["shards"])
    backend = _make_backend(prep, job, config, nothing_left)
    try:
        scheduler = _schedule(prep, job, config, manifest, backend)
    except BaseException as err:
        _record_end(out_dir, manifest, err)
        raise
    finally:
        backend.shutdown()
    refresh_counts(manifest)
    record_run(manifest, "finished")
    save_manifest(out_dir, manifest)
    description = "none: every shard was already complete" if nothing_left else backend.description
    return _Outcome(manifest, scheduler, description, skipped, redo, rebuilt)


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
    prep = _prepare(job)
    with _output_lock(Path(job.out_dir)):
        done = _run_locked(prep, job, config)
    counts, scheduler = done.manifest["counts"], done.scheduler
    return RunSummary(
        out_dir=Path(job.out_dir),
        feature_set=job.feature_set,
        planned=counts["planned"],
        done=counts["done"],
        failed=counts["failed"],
        done_this_run=scheduler.done_this_run,
        failed_this_run=scheduler.failed_this_run,
        skipped_shards=done.skipped,
        shards=counts["shards"],
        frames=scheduler.frames,
        wall_s=time.monotonic() - t0,
        random_weights=prep.random_weights,
        failures=list(done.manifest["failures"]),
        first_result_s=None if scheduler.first_settled is None else scheduler.first_settled - t0,
        backend=done.backend,
        reextracted=done.redo,
        rebuilt_manifest=done.rebuilt,
    )
