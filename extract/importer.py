"""``vqa-extract import``: feature files released by the papers' authors -> a feature directory.

The result is an ordinary feature directory (``manifest.json`` + shards with checksums, see
``extract/manifest.py``): ``FeatureReader``, ``vqa-extract info / verify`` and ``vqa-train`` read it as
they read an extraction. What differs is its provenance: instead of backbones and their weights it records
``imported``: the format, ``"features released by the authors"``, each source file's size and sha256 (a
directory source: its listing, and each per-video file's sha256 in its shard's ``sources`` attribute), the
official loader the import follows and the conversions made (``extract/released/``).

Flow (``run_import``):

1. the plan: every video the dataset's annotations reference (all splits), sorted, cut into shards;
2. the sources are hashed (streamed; a resumed run reuses a hash whose file kept its size and mtime);
3. one video is read to learn the sizes (``outputs``), so the manifest is complete before any shard;
4. a resumed run must match the manifest (format, options, the sources' sha256, plan) or is refused;
   complete shards are checked and kept, a shard file written just before a crash is adopted;
5. shard by shard, each video is read (one HDF5 dataset or one file at a time: the sources are never
   loaded whole), checked (shape against the outputs, finite values) and written with the shard
   (temporary name, rename), then the manifest is rewritten atomically.

A video that cannot be imported is recorded as failed with a one-line reason naming the file and the key
(``released.VideoProblem``: missing, wrong shape, NaN / inf, files disagreeing); a source that is not of
the named format stops the import (``released.ReleasedFormatError``) with every shard written so far whole
and recorded, nothing half-written.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from extract.engine import LOCK_NAME, OutputInUseError, ResumeMismatchError
from extract.manifest import (
    MANIFEST_NAME,
    ShardProblem,
    clean_output,
    identity_differences,
    load_manifest,
    mark_complete,
    new_manifest,
    plan_shards,
    reconcile,
    refresh_counts,
    remove_temporaries,
    save_manifest,
    shard_context,
    shard_stamp,
)
from extract.released import (
    RELEASED,
    ImportOptions,
    Loaded,
    Planned,
    ReleasedFormat,
    ReleasedFormatError,
    VideoProblem,
    get_format,
    listing_record,
)
from extract.shards import SHARD_DIR, FeatureSpec, ShardWriter, normalize_outputs
from pipelines.atomic import directory_lock

__all__ = ["ImportJob", "ImportSummary", "resolve_sources", "run_import"]

#: manifest key caching the sources' sha256 by path, size and mtime (not part of the resume identity)
HASH_CACHE = "import_hashes"


@dataclass
class ImportJob:
    """What to import and where.

    Args:
        out_dir: the feature directory to write (manifest.json + shards/).
        format: a ``RELEASED_FORMATS`` name.
        sources: role -> path (:func:`resolve_sources`).
        adapter: the dataset adapter whose annotations name the videos (and, for C3D, their durations).
        options: the import options (resolved for the format by :func:`run_import`).
        source: JSON-able description of the dataset (dataset, root, task).
        shard_size: videos per shard (None: the format's default).
        overwrite: delete an existing output first instead of resuming.
    """

    out_dir: Path
    format: str
    sources: Mapping[str, Path]
    adapter: Any
    options: ImportOptions = ImportOptions()
    source: Mapping[str, Any] = field(default_factory=dict)
    shard_size: int | None = None
    overwrite: bool = False


@dataclass
class ImportSummary:
    """What an import did; ``exit_code`` is 3 when some video failed, else 0."""

    out_dir: Path
    format: str
    feature_set: str
    planned: int
    done: int
    failed: int
    done_this_run: int = 0
    failed_this_run: int = 0
    skipped_shards: int = 0
    shards: int = 0
    bytes_written: int = 0
    wall_s: float = 0.0
    hash_s: float = 0.0
    failures: list[dict[str, str]] = field(default_factory=list)
    reextracted: list[ShardProblem] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        return 3 if self.failed else 0

    def format_lines(self) -> str:
        n = self.done_this_run + self.failed_this_run
        rate = n / self.wall_s if self.wall_s > 0 else 0.0
        lines = [
            f"vqa-extract import: {self.format} -> {self.feature_set} features in {self.out_dir}",
            f"  videos: {self.done} done, {self.failed} failed, {self.planned} planned ({self.shards} "
            f"shards, {self.skipped_shards} already complete before this run)",
            f"  this run: {self.done_this_run} done, {self.failed_this_run} failed in {self.wall_s:.1f} s "
            f"({rate:.1f} videos/s, {self.bytes_written / 2**20 / max(self.wall_s, 1e-9):.1f} MiB/s of "
            f"features; hashing the sources took {self.hash_s:.1f} s)",
        ]
        lines += [f"  DAMAGED shard imported again: {p}" for p in self.reextracted]
        if self.failed:
            where = self.out_dir / MANIFEST_NAME
            lines.append(f'  {self.failed} video(s) FAILED; reasons in {where} ("failures"):')
            lines += [f"    {f['video_id']}: {f['reason']}" for f in self.failures[:10]]
            if len(self.failures) > 10:
                lines.append(f"    ... and {len(self.failures) - 10} more (vqa-extract info --json)")
        return "\n".join(lines)


# ============================================================================================ sources
def resolve_sources(fmt: ReleasedFormat, given: Sequence[str], *, dataset: str, task: str | None,
                    options: ImportOptions) -> dict[str, Path]:
    """Each role's path from the command line's ``SOURCE`` arguments.

    ``ROLE=PATH`` names one role; a bare ``PATH`` is the one source of a one-role format, or a directory
    holding the format's files under their official names (``ReleasedFormat.default_paths``).

    Raises:
        ReleasedFormatError: an unknown role, a role given twice or missing, a path that does not exist.
    """
    roles, named, bare = fmt.roles, {}, []
    for item in given:
        role, sep, path = item.partition("=")
        if sep and role in roles:
            if role in named:
                raise ReleasedFormatError(f"{role}= given twice for import {fmt.name}")
            named[role] = Path(path).expanduser()
        elif sep and not Path(item).exists():
            raise ReleasedFormatError(f"{item!r}: unknown role {role!r} of import {fmt.name}; its sources "
                                      f"are {', '.join(f'{r}=PATH' for r in roles)}")
        else:
            bare.append(Path(item).expanduser())
    if len(bare) > 1:
        raise ReleasedFormatError(f"{len(bare)} sources without a role; name them: "
                                  f"{' '.join(f'{r}=PATH' for r in roles)}")
    for path in bare:
        if len(roles) == 1 and not (path.is_dir() and roles[next(iter(roles))].kind == "file"):
            named.setdefault(next(iter(roles)), path)
        elif path.is_dir():
            found = fmt.default_paths(path, dataset, task, options)
            named = {**found, **named}
        else:
            raise ReleasedFormatError(f"{path}: not a directory holding the {fmt.name} files; name each "
                                      f"source: {' '.join(f'{r}=PATH' for r in roles)}")
    return _checked_sources(fmt, named)


def _checked_sources(fmt: ReleasedFormat, named: Mapping[str, Path]) -> dict[str, Path]:
    missing = [r for r in fmt.roles if r not in named]
    if missing:
        raise ReleasedFormatError(f"import {fmt.name} needs {', '.join(f'{r}=PATH' for r in missing)} "
                                  f"({'; '.join(fmt.roles[r].what for r in missing)})")
    for role, path in named.items():
        kind = fmt.roles[role].kind
        if not path.exists():
            raise ReleasedFormatError(f"{path}: no such {'directory' if kind == 'dir' else 'file'} ({role})")
        if (kind == "dir") != path.is_dir():
            raise ReleasedFormatError(f"{path}: expected a {'directory' if kind == 'dir' else 'file'} for "
                                      f"{role} ({fmt.roles[role].what})")
    return {r: named[r] for r in fmt.roles}


def _source_records(fmt: ReleasedFormat, paths: Mapping[str, Path], cache: Mapping[str, Any]
                    ) -> tuple[dict[str, Any], dict[str, Any]]:
    """Provenance records of the sources (file: name, bytes, sha256; directory: its listing) and the
    refreshed hash cache (path -> sha256, bytes, mtime_ns)."""
    records, stamps = {}, {}
    for role, path in paths.items():
        if fmt.roles[role].kind == "dir":
            records[role] = listing_record(path)
            continue
        key, stat = str(path.resolve()), path.stat()
        old = cache.get(key)
        fresh = old and old.get("bytes") == stat.st_size and old.get("mtime_ns") == stat.st_mtime_ns
        stamps[key] = old if fresh else shard_stamp(path)
        records[role] = {"file": path.name, "bytes": stamps[key]["bytes"], "sha256": stamps[key]["sha256"]}
    return records, stamps


# ============================================================================================ checks
def _checked(loaded: Loaded, specs: Mapping[str, FeatureSpec], video_id: str) -> dict[str, np.ndarray]:
    """The arrays cast to the outputs' dtypes, after checking shapes and finite values.

    Raises:
        VideoProblem: naming the file and key the array came from.
    """
    out = {}
    for name, spec in specs.items():
        x, origin = np.asarray(loaded.arrays[name]), loaded.origin[name]
        if x.dtype.kind == "f":
            _finite(x, origin, video_id, name, "")
        try:
            out[name] = spec.check(video_id, name, x)
        except ValueError as err:
            raise VideoProblem(f"{origin}: {err}") from None
        if out[name].dtype.kind == "f" and x.dtype != out[name].dtype:
            _finite(out[name], origin, video_id, name, f" once stored as {spec.dtype} (use --dtype float32)")
    return out


def _finite(x: np.ndarray, origin: str, video_id: str, name: str, after: str) -> None:
    rows = np.isfinite(x.reshape(len(x), -1)).all(axis=1) if x.ndim else np.isfinite(x).reshape(1)
    if not rows.all():
        bad = np.flatnonzero(~rows)
        raise VideoProblem(f"{origin} (video {video_id!r}): {len(bad)} of {len(rows)} rows of {name!r} hold "
                           f"NaN or inf{after}, first row {int(bad[0])}")


def _probe(reader: Any, planned: Sequence[Planned]) -> Loaded:
    """The first video that can be read (its sizes become the outputs').

    Raises:
        ReleasedFormatError: no video of the annotations could be read.
    """
    first: VideoProblem | None = None
    for video in planned:
        try:
            return reader.read(video)
        except VideoProblem as problem:
            first = first or problem
    raise ReleasedFormatError(f"none of the {len(planned)} videos of the annotations could be read (first: "
                              f"{first}); check the format, --dataset / --task and the source files")


# ============================================================================================ manifest
def _provenance(fmt: ReleasedFormat, records: Mapping[str, Any], options: ImportOptions,
                specs: Mapping[str, FeatureSpec]) -> dict[str, Any]:
    return {
        "feature_set": fmt.feature_set,
        "backbones": {},
        "imported": {
            "format": fmt.name,
            "features": RELEASED,
            "description": fmt.description,
            "official_loader": fmt.loader,
            "files": dict(records),
            "conversion": fmt.conversion(options),
            "options": asdict(options),
        },
        "samplers": fmt.sampler(),
        "dtype": options.dtype,
        "outputs": {name: spec.to_json() for name, spec in specs.items()},
    }


def _start(job: ImportJob, fresh: dict[str, Any], existing: dict[str, Any] | None,
           stamps: Mapping[str, Any]) -> tuple[dict[str, Any], list[ShardProblem]]:
    """The manifest to continue: a fresh one, or the existing one when it describes the same import."""
    manifest = fresh
    if existing is not None:
        diffs = identity_differences(existing, fresh)
        if diffs:
            raise ResumeMismatchError(
                f"{job.out_dir} already holds features made differently:\n  " + "\n  ".join(diffs[:20])
                + "\nuse a new --out, or --overwrite to replace them")
        manifest = existing
    manifest[HASH_CACHE] = dict(stamps)
    remove_temporaries(Path(job.out_dir))
    redo = reconcile(manifest, Path(job.out_dir))
    save_manifest(job.out_dir, manifest)
    return manifest, redo


def _import_shard(manifest: dict[str, Any], index: int, reader: Any, by_id: Mapping[str, Planned],
                  specs: Mapping[str, FeatureSpec], out_dir: Path) -> tuple[int, int, int]:
    """Read, check and write one shard; ``(done, failed, bytes)``."""
    entry = manifest["shards"][index]
    ids, items, failures, sources = [], [], [], {}
    for video_id, where in zip(entry["videos"], entry["paths"], strict=True):
        try:
            loaded = reader.read(by_id[video_id])
            items.append(_checked(loaded, specs, video_id))
        except VideoProblem as problem:
            failures.append({"video_id": video_id, "path": where, "reason": str(problem)})
            continue
        ids.append(video_id)
        if loaded.files:
            sources[video_id] = loaded.files
    writer = ShardWriter(out_dir / SHARD_DIR / entry["name"], feature_set=manifest["feature_set"],
                         outputs=specs, provenance=manifest["provenance"], options=manifest["options"],
                         **shard_context(manifest, index))
    writer.write(ids, items, failures, attrs={"sources": sources} if sources else None)
    mark_complete(manifest, index, ids, failures, shard_stamp(writer.path))
    save_manifest(out_dir, manifest)
    reader.refresh()
    return len(ids), len(failures), sum(a.nbytes for item in items for a in item.values())


# ============================================================================================ entry point
def run_import(job: ImportJob) -> ImportSummary:
    """Import ``job.sources`` into ``job.out_dir``, resuming an identical earlier import.

    Raises:
        ReleasedFormatError: a source is not of the format (shards written so far are whole and recorded).
        ResumeMismatchError: ``out_dir`` holds another import or extraction.
        OutputInUseError: another process writes ``out_dir``.
    """
    t0, out_dir = time.monotonic(), Path(job.out_dir)
    fmt = get_format(job.format)
    dataset = job.adapter.name
    if dataset not in fmt.datasets:
        raise ReleasedFormatError(f"import {fmt.name} holds features of {', '.join(fmt.datasets)}, not of "
                                  f"--dataset {dataset}")
    options = fmt.resolve(job.options, dataset)
    planned = fmt.plan(job.adapter, options)
    if not planned:
        raise ReleasedFormatError(f"the {dataset} annotations under {job.source.get('root')} name no videos")
    by_id = {p.video_id: p for p in planned}
    message = f"{out_dir} is being written by another vqa-extract process; wait for it or use another --out"
    with directory_lock(out_dir, LOCK_NAME, error=OutputInUseError, message=message):
        if job.overwrite:
            clean_output(out_dir)
        existing = load_manifest(out_dir) if (out_dir / MANIFEST_NAME).exists() else None
        th = time.monotonic()
        records, stamps = _source_records(fmt, job.sources, (existing or {}).get(HASH_CACHE, {}))
        hash_s = time.monotonic() - th
        with fmt.reader(job.sources, options) as reader:
            specs = normalize_outputs(reader.outputs(_probe(reader, planned), options.dtype))
            size = job.shard_size or fmt.default_shard_size
            fresh = new_manifest(
                feature_set=fmt.feature_set, outputs=specs, options={"format": fmt.name, **asdict(options)},
                provenance=_provenance(fmt, records, options, specs), source=job.source, shard_size=size,
                plan=[[(v, reader.where(by_id[v])) for v in ids] for ids in plan_shards(list(by_id), size)])
            manifest, redo = _start(job, fresh, existing, stamps)
            skipped = manifest["counts"]["complete_shards"]
            done = failed = written = 0
            for index, entry in enumerate(manifest["shards"]):
                if not entry["complete"]:
                    d, f, b = _import_shard(manifest, index, reader, by_id, specs, out_dir)
                    done, failed, written = done + d, failed + f, written + b
        refresh_counts(manifest)
        save_manifest(out_dir, manifest)
    counts = manifest["counts"]
    return ImportSummary(
        out_dir=out_dir, format=fmt.name, feature_set=fmt.feature_set, planned=counts["planned"],
        done=counts["done"], failed=counts["failed"], done_this_run=done, failed_this_run=failed,
        skipped_shards=skipped, shards=counts["shards"], bytes_written=written, wall_s=time.monotonic() - t0,
        hash_s=hash_s, failures=list(manifest["failures"]), reextracted=redo)
