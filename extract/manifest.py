"""The life of a feature directory's ``manifest.json``: plan, resume, completion, integrity, repair.

One home for everything that reads or changes the manifest (``extract/shards.py`` holds the shard file
format, ``extract/engine/`` the scheduler):

- **plan**: :func:`plan_shards` (sorted ids cut into runs of ``shard_size``) and :func:`new_manifest`;
- **resume**: :func:`identity_differences` (what must match between a run and the output it resumes),
  :func:`reconcile` (bring the manifest in line with the shard files on disk: adopt a shard written
  just before a crash, re-extract a missing or damaged one), :func:`remove_temporaries`,
  :func:`clean_output`;
- **completion**: :func:`mark_complete` records a written shard with its :func:`shard_stamp`
  (``sha256``, ``bytes``, ``mtime_ns``) and updates the counts (:func:`refresh_counts`);
- **integrity**: :func:`check_stored_ids` (cheap: the ids a shard stores equal the manifest's; run by
  ``FeatureReader`` whenever it opens a shard and by every re-run), :func:`check_shard` (also size and,
  when the file changed or ``full``, the checksum), :func:`check_checksums` (what training checks
  once per run: every shard's sha256 unless size and mtime show the file unchanged since a check),
  :func:`verify` (``vqa-extract verify``: every checksum);
- **repair** (``extract/featuredir.py``): ``rebuild_manifest`` (``vqa-extract repair``) rebuilds a lost
  ``manifest.json`` from the shards' own attributes; a re-run of the extraction command rebuilds it from
  its plan instead;
- **identity**: :func:`fingerprint` (the one fingerprint of a feature directory's content: recorded in a
  run's provenance and keying caches derived from the features, such as the PCA of moment retrieval);
- :data:`MANIFEST_NAME`, :class:`ManifestError`, :func:`load_manifest` / :func:`save_manifest` (atomic);
  ``write_feature_dir`` (``extract/featuredir.py``) makes a complete directory from in-memory arrays.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from extract.shards import (
    FORMAT,
    SHARD_DIR,
    FeatureSpec,
    read_shard_attrs,
    shard_name,
    stored_ids,
    utc_now,
)
from pipelines.atomic import write_json_atomic
from pipelines.version import toolkit_version

__all__ = [
    "MANIFEST_NAME",
    "ManifestError",
    "ShardProblem",
    "check_checksums",
    "check_shard",
    "check_stored_ids",
    "clean_output",
    "describe_state",
    "fingerprint",
    "identity_differences",
    "load_manifest",
    "mark_complete",
    "new_manifest",
    "plan_shards",
    "reconcile",
    "record_run",
    "refresh_counts",
    "remove_temporaries",
    "save_manifest",
    "shard_stamp",
    "verify",
]

log = logging.getLogger(__name__)

#: the manifest's file name inside a feature directory (beside ``shards/``)
MANIFEST_NAME = "manifest.json"


class ManifestError(ValueError):
    """A feature directory's manifest is missing, unreadable or inconsistent (the message names the file)."""


#: options that may differ between a run and its resumption: only ``max_pixels``, which decides which
#: videos fail (recorded) but never a written value; every other option, batch_frames included (the batch
#: size can change a backbone's float rounding), must match
RUNTIME_OPTIONS: frozenset[str] = frozenset({"max_pixels"})
_BLOCK = 4 << 20


# ============================================================================================ plan
def plan_shards(video_ids: Sequence[str], shard_size: int) -> list[list[str]]:
    """The deterministic shard assignment: sorted unique ids cut into runs of ``shard_size``.

    Args:
        video_ids: the planned video ids (any order; duplicates are an error).
        shard_size: videos per shard (>= 1).

    Returns:
        One list of ids per shard, shard ``k`` holding ``sorted(ids)[k * shard_size:(k + 1) * shard_size]``.
    """
    if shard_size < 1:
        raise ValueError(f"shard_size must be >= 1, got {shard_size}")
    ordered = sorted(video_ids)
    for a, b in zip(ordered, ordered[1:], strict=False):
        if a == b:
            raise ValueError(f"video id {a!r} is listed twice; ids must be unique")
    return [ordered[i : i + shard_size] for i in range(0, len(ordered), shard_size)]


def new_manifest(
    *,
    feature_set: str,
    outputs: Mapping[str, FeatureSpec],
    options: Mapping[str, Any],
    provenance: Mapping[str, Any],
    source: Mapping[str, Any],
    shard_size: int,
    plan: Sequence[Sequence[tuple[str, str]]],
) -> dict[str, Any]:
    """A fresh manifest for a planned run (every shard pending).

    Args:
        feature_set: name.
        outputs: name -> FeatureSpec.
        options: JSON-able extraction options.
        provenance: JSON-able provenance (toolkit version added).
        source: where the videos came from (dataset, root, task, limit).
        shard_size: videos per shard.
        plan: per shard, the (video id, path) pairs in order.

    Returns:
        The manifest dict (see docs/features.md).
    """
    now = utc_now()
    manifest = {
        "format": FORMAT,
        "feature_set": feature_set,
        "outputs": {name: spec.to_json() for name, spec in outputs.items()},
        "options": dict(options),
        "provenance": {**dict(provenance), "toolkit_version": toolkit_version()},
        "source": dict(source),
        "shard_size": int(shard_size),
        "created": now,
        "updated": now,
        "shards": [
            {
                "name": shard_name(i),
                "videos": [vid for vid, _ in videos],
                "paths": [str(p) for _, p in videos],
                "complete": False,
                "ids": [],
                "count": 0,
                "failed": 0,
            }
            for i, videos in enumerate(plan)
        ],
        "failures": [],
    }
    refresh_counts(manifest)
    return manifest


def shard_context(manifest: Mapping[str, Any], index: int) -> dict[str, Any]:
    """The ``ShardWriter`` keywords that let a shard describe its place in the plan (for repair)."""
    entry = manifest["shards"][index]
    return {
        "shard": index,
        "planned": list(entry["videos"]),
        "paths": list(entry.get("paths") or [""] * len(entry["videos"])),
        "source": manifest.get("source", {}),
        "shard_size": manifest.get("shard_size"),
        "num_shards": len(manifest["shards"]),
    }


# ============================================================================================ load / save
def load_manifest(out_dir: str | os.PathLike) -> dict[str, Any]:
    """Read and check ``OUT/manifest.json``.

    Raises:
        ManifestError: naming the file, when it is missing, not JSON or not of this format.
    """
    path = Path(out_dir) / MANIFEST_NAME
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        hint = f"run vqa-extract --out {out_dir}"
        if any((Path(out_dir) / SHARD_DIR).glob("*.h5")):
            hint = f"rebuild it from the shards with `vqa-extract repair {out_dir}`, or re-run the extraction"
        raise ManifestError(
            f"{path} not found: {Path(out_dir)} is not a feature directory ({hint})"
        ) from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ManifestError(
            f"{path}: unreadable manifest ({err}); `vqa-extract repair {out_dir} --force` rebuilds it"
        ) from err
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        got = manifest.get("format") if isinstance(manifest, dict) else type(manifest).__name__
        raise ManifestError(f"{path}: unknown manifest format {got!r}, expected {FORMAT!r}")
    for key in ("feature_set", "outputs", "shards", "failures"):
        if key not in manifest:
            raise ManifestError(f"{path}: manifest lacks {key!r}")
    return manifest


def save_manifest(out_dir: str | os.PathLike, manifest: Mapping[str, Any]) -> None:
    """Write ``OUT/manifest.json`` atomically (temporary name, fsync, rename)."""
    manifest = dict(manifest)
    manifest["updated"] = utc_now()
    write_json_atomic(Path(out_dir) / MANIFEST_NAME, manifest)


def refresh_counts(manifest: dict[str, Any]) -> None:
    """Recompute ``manifest["counts"]`` (planned / done / failed / pending videos, complete shards) and
    ``status`` (``complete`` or ``incomplete``; whether a run is writing it now is the output lock's to
    say, see :func:`describe_state`)."""
    shards = manifest["shards"]
    done = sum(s["count"] for s in shards if s["complete"])
    failed = len(manifest["failures"])
    planned = sum(len(s["videos"]) for s in shards)
    manifest["counts"] = {
        "planned": planned,
        "done": done,
        "failed": failed,
        "pending": planned - done - failed,
        "shards": len(shards),
        "complete_shards": sum(1 for s in shards if s["complete"]),
    }
    manifest["status"] = "complete" if manifest["counts"]["complete_shards"] == len(shards) else "incomplete"


def describe_state(manifest: Mapping[str, Any], *, writing: bool) -> str:
    """One line on what state a feature directory is in, for ``vqa-extract info`` and ``verify``.

    Args:
        manifest: the directory's manifest (``last_run`` records how the last extraction ended).
        writing: whether a ``vqa-extract`` process holds the directory's lock now.
    """
    counts = manifest.get("counts", {})
    if manifest.get("status") == "complete":
        return "complete"
    left = (f"{counts.get('complete_shards', 0)} of {counts.get('shards', 0)} shards complete, "
            f"{counts.get('pending', 0)} of {counts.get('planned', 0)} videos not extracted yet")
    last = manifest.get("last_run") or {}
    if writing:
        started = last.get("started", "?")
        return f"incomplete, being written now by a vqa-extract process (started {started}): {left}"
    outcome = last.get("outcome")
    if outcome == "running":  # started, never recorded an end: killed (SIGKILL, power loss) or crashed hard
        why = f"the run started {last.get('started')} was killed before it finished"
    elif outcome in ("failed", "interrupted"):
        why = f"the run {outcome} at {last.get('ended')}"
        why += f" ({last['error']})" if last.get("error") else ""
    else:
        why = "no run is writing it"
    return f"INCOMPLETE: {why}; {left}. Re-run the same vqa-extract command to resume"


def record_run(manifest: dict[str, Any], outcome: str, error: BaseException | None = None) -> None:
    """Record in ``manifest["last_run"]`` that a run started (``running``) or how it ended (``finished``,
    ``failed`` with its error, ``interrupted``)."""
    if outcome == "running":
        manifest["last_run"] = {"started": utc_now(), "outcome": "running"}
        return
    last = dict(manifest.get("last_run") or {})
    last.update(ended=utc_now(), outcome=outcome)
    if error is not None:
        last["error"] = (f"{type(error).__name__}: {error}".splitlines() or [""])[0][:300]
    manifest["last_run"] = last


# ============================================================================================ completion
def shard_stamp(path: str | os.PathLike) -> dict[str, Any]:
    """``{"sha256", "bytes", "mtime_ns"}`` of a shard file (the checksum reads the whole file)."""
    path = Path(path)
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(_BLOCK):
            digest.update(block)
    stat = path.stat()
    return {"sha256": digest.hexdigest(), "bytes": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def mark_complete(
    manifest: dict,
    index: int,
    ids: Sequence[str],
    failures: Sequence[Mapping[str, str]],
    stamp: Mapping[str, Any],
) -> None:
    """Record shard ``index`` as written: its ids, failures and :func:`shard_stamp`; update the counts."""
    entry = manifest["shards"][index]
    entry.update(complete=True, ids=list(ids), count=len(ids), failed=len(failures), **stamp)
    failed_ids = {f["video_id"] for f in failures}
    manifest["failures"] = [f for f in manifest["failures"] if f["video_id"] not in failed_ids]
    manifest["failures"].extend({**f, "shard": entry["name"]} for f in failures)
    manifest["failures"].sort(key=lambda f: f["video_id"])
    refresh_counts(manifest)


def _mark_pending(manifest: dict, index: int) -> None:
    entry = manifest["shards"][index]
    for key in ("sha256", "bytes", "mtime_ns"):
        entry.pop(key, None)
    entry.update(complete=False, ids=[], count=0, failed=0)
    manifest["failures"] = [f for f in manifest["failures"] if f.get("shard") != entry["name"]]


# ============================================================================================ integrity
@dataclass(frozen=True)
class ShardProblem:
    """A complete shard that fails a check: its file and what is wrong."""

    path: Path
    reason: str

    def __str__(self) -> str:
        return f"{self.path}: {self.reason}"


def check_stored_ids(path: Path, ids: Sequence[str], entry: Mapping[str, Any]) -> str | None:
    """Why the ids stored in a shard differ from its manifest entry, or None (cheap; always run)."""
    if list(ids) == list(entry["ids"]):
        return None
    want, got = set(entry["ids"]), set(ids)
    if not want & got and got:
        return (f"holds the videos of another shard (e.g. {sorted(got)[0]!r}, expected e.g. "
                f"{sorted(want)[0] if want else None!r}): swapped or replaced")
    return f"stores {len(ids)} ids that differ from the {len(entry['ids'])} the manifest lists"


def check_shard(out_dir: Path, entry: Mapping[str, Any], *, full: bool = False) -> str | None:
    """Why a complete shard cannot be trusted, or None.

    Always: the file exists, has the recorded size and stores the manifest's ids. The checksum is
    compared when ``full`` or when the file's size or modification time differ from the record.
    """
    path = Path(out_dir) / SHARD_DIR / entry["name"]
    if not path.is_file():
        return "missing"
    stat = path.stat()
    if "bytes" in entry and stat.st_size != entry["bytes"]:
        return f"has {stat.st_size} bytes, {entry['bytes']} recorded: truncated or replaced"
    try:
        ids = stored_ids(path)
    except ManifestError as err:
        return f"unreadable ({err})"
    problem = check_stored_ids(path, ids, entry)
    if problem:
        return problem
    if "sha256" in entry and (full or stat.st_mtime_ns != entry.get("mtime_ns")):
        if shard_stamp(path)["sha256"] != entry["sha256"]:
            return "checksum (sha256) differs from the manifest's: the file was modified or damaged"
    return None


def verify(out_dir: str | os.PathLike) -> tuple[int, list[ShardProblem]]:
    """Check every complete shard fully (ids, size, sha256); ``(shards checked, problems)``."""
    out_dir = Path(out_dir)
    manifest = load_manifest(out_dir)
    problems, checked = [], 0
    for entry in manifest["shards"]:
        if not entry["complete"]:
            continue
        checked += 1
        reason = check_shard(out_dir, entry, full=True)
        if reason is None and "sha256" not in entry:
            reason = "no checksum recorded (written by an older toolkit); only its ids were checked"
        if reason:
            problems.append(ShardProblem(out_dir / SHARD_DIR / entry["name"], reason))
    return checked, problems


def check_checksums(
    out_dir: str | os.PathLike,
    manifest: Mapping[str, Any],
    known: Mapping[str, Mapping[str, Any]] | None = None,
) -> tuple[list[ShardProblem], dict[str, dict[str, Any]]]:
    """Check the bytes of every complete shard against the manifest's sha256, reading each file only when
    needed (what a reader of the features runs once before trusting them).

    A shard whose size and modification time equal the manifest's record, or a record in ``known`` (a
    copy checked before), is taken as checked; any other shard is read and hashed.

    Args:
        out_dir: the feature directory.
        manifest: its manifest.
        known: shard path -> ``{"bytes", "mtime_ns", "sha256"}`` of earlier checks (a cache).

    Returns:
        ``(problems, checked)``: the shards that differ (or are missing), and the records of the shards
        checked now or before (``known`` updated; store it for the next run).
    """
    out_dir, known = Path(out_dir), dict(known or {})
    problems, checked = [], {}
    for entry in manifest["shards"]:
        if not entry.get("complete") or "sha256" not in entry:
            continue
        path = out_dir / SHARD_DIR / entry["name"]
        try:
            stat = path.stat()
        except OSError as err:
            problems.append(ShardProblem(path, f"cannot be read ({err.strerror})"))
            continue
        stamp = {"bytes": stat.st_size, "mtime_ns": stat.st_mtime_ns, "sha256": entry["sha256"]}
        recorded = {k: entry.get(k) for k in stamp}
        if stamp == recorded or known.get(str(path)) == stamp:
            checked[str(path)] = stamp
            continue
        if stat.st_size != entry.get("bytes", stat.st_size):
            problems.append(ShardProblem(path, f"has {stat.st_size} bytes, {entry['bytes']} recorded: "
                                               "truncated or replaced"))
        elif shard_stamp(path)["sha256"] != entry["sha256"]:
            problems.append(ShardProblem(path, "its checksum (sha256) differs from the manifest's: the file "
                                               "was modified or damaged"))
        else:
            checked[str(path)] = stamp
    return problems, checked


def fingerprint(manifest: Mapping[str, Any]) -> str:
    """``sha256:<hex>`` of a feature directory's content: its identity, each complete shard's ids and sha256.

    Computed from the manifest alone (cheap). It does not depend on where the directory lies, so a copied
    directory keeps its fingerprint; a shard extracted again (new file, new checksum) changes it.
    """
    shards = [
        [e["name"], e["ids"], e.get("sha256") or e.get("bytes")] for e in manifest["shards"] if e["complete"]
    ]
    payload = json.dumps({"identity": identity(manifest), "shards": shards}, sort_keys=True, default=str)
    return "sha256:" + hashlib.sha256(payload.encode()).hexdigest()


# ============================================================================================ resume
def identity(manifest: Mapping[str, Any]) -> dict[str, Any]:
    """What must match for a resume: everything that changes which videos or which values are written."""
    options = {k: v for k, v in manifest["options"].items() if k not in RUNTIME_OPTIONS}
    provenance = {k: v for k, v in manifest["provenance"].items() if k != "toolkit_version"}
    return {
        "feature_set": manifest["feature_set"],
        "outputs": manifest["outputs"],
        "options": options,
        "provenance": provenance,
        "source": manifest.get("source", {}),
        "shard_size": manifest.get("shard_size"),
        "videos": [s["videos"] for s in manifest["shards"]],
    }


def identity_differences(existing: Mapping[str, Any], fresh: Mapping[str, Any], *,
                         legacy: Mapping[str, Any] | None = None) -> list[str]:
    """The differences between an existing manifest and a fresh one that forbid resuming, one per line.

    A manifest written before ``precision`` was an option gets the precision that ran then (bf16 autocast
    on CUDA, fp32 on CPU), so it resumes with that precision and is refused with another. Likewise an
    option of ``legacy`` (name -> the value that ran before the option existed, from the feature set's
    ``legacy_options``) missing from the existing manifest takes that value.
    """
    if "precision" in fresh.get("options", {}):  # a feature set without the option (e.g. a test's) has none
        existing = _with_legacy_precision(existing)
    for name, value in (legacy or {}).items():
        existing = _with_legacy_option(existing, name, value)
    return _differences(identity(existing), identity(fresh))


def _with_legacy_option(manifest: Mapping[str, Any], name: str, value: Any) -> Mapping[str, Any]:
    options = manifest.get("options", {})
    if name in options:
        return manifest
    out = {**manifest, "options": {**options, name: value}}
    prov_options = manifest.get("provenance", {}).get("options")
    if isinstance(prov_options, Mapping) and name not in prov_options:
        out["provenance"] = {**manifest["provenance"], "options": {**prov_options, name: value}}
    return out


def _with_legacy_precision(manifest: Mapping[str, Any]) -> Mapping[str, Any]:
    options = manifest.get("options", {})
    if "precision" in options:
        return manifest
    ran = "bf16" if str(options.get("device", "cpu")).startswith("cuda") else "fp32"
    out = {**manifest, "options": {**options, "precision": ran}}
    prov_options = manifest.get("provenance", {}).get("options")
    if isinstance(prov_options, Mapping) and "precision" not in prov_options:
        out["provenance"] = {**manifest["provenance"], "options": {**prov_options, "precision": ran}}
    return out


def _differences(old: Any, new: Any, prefix: str = "") -> list[str]:
    if isinstance(old, Mapping) and isinstance(new, Mapping):
        out = []
        for key in sorted(set(old) | set(new), key=str):
            path = f"{prefix}.{key}" if prefix else str(key)
            if key not in old:
                out.append(f"{path}: not in the existing run, now {_brief(new[key])}")
            elif key not in new:
                out.append(f"{path}: was {_brief(old[key])}, now absent")
            else:
                out.extend(_differences(old[key], new[key], path))
        return out
    if old != new:
        if prefix == "videos":
            return ["the list of videos (or their shard assignment) differs"]
        return [f"{prefix}: was {_brief(old)}, now {_brief(new)}"]
    return []


def _brief(value: Any, limit: int = 80) -> str:
    text = json.dumps(value, sort_keys=True, default=str)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _belongs(attrs: Mapping[str, Any], manifest: Mapping[str, Any], entry: Mapping[str, Any]) -> bool:
    """Whether a shard file's own attributes say it was written for this manifest entry."""
    def strip(prov: Any) -> Any:
        return {k: v for k, v in prov.items() if k != "toolkit_version"} if isinstance(prov, dict) else prov

    return (
        attrs.get("planned") == entry["videos"]
        and attrs.get("feature_set") == manifest["feature_set"]
        and strip(attrs.get("provenance")) == strip(manifest["provenance"])
        and attrs.get("options") == manifest["options"]
    )


def reconcile(manifest: dict, out_dir: Path) -> list[ShardProblem]:
    """Bring the manifest in line with the shard files on disk before a run continues.

    A complete shard that is missing or fails :func:`check_shard` is deleted and marked pending (the run
    extracts it again); a shard file written just before a crash (or found after the manifest was lost)
    is adopted when its attributes say it belongs to this plan.

    Returns:
        The shards that will be extracted again, with the reason.

    Raises:
        ManifestError: a shard file that belongs to another plan or other options.
    """
    redo: list[ShardProblem] = []
    for index, entry in enumerate(manifest["shards"]):
        path = out_dir / SHARD_DIR / entry["name"]
        if entry["complete"]:
            reason = check_shard(out_dir, entry)
            if reason:
                log.warning("%s %s; it will be extracted again", path, reason)
                redo.append(ShardProblem(path, reason))
                path.unlink(missing_ok=True)
                _mark_pending(manifest, index)
        elif path.is_file():
            attrs = read_shard_attrs(path)  # written, but the manifest update was lost
            if not _belongs(attrs, manifest, entry):
                raise ManifestError(
                    f"{path} does not belong to the plan in {out_dir / MANIFEST_NAME} (other videos or "
                    "options); use --overwrite or a new --out"
                )
            mark_complete(manifest, index, attrs["ids"], attrs["failures"], shard_stamp(path))
    refresh_counts(manifest)
    return redo


def remove_temporaries(out_dir: Path) -> None:
    """Delete the temporary files a crashed run left (shards and manifest under ``.tmp-*`` names)."""
    shard_dir = out_dir / SHARD_DIR
    if shard_dir.is_dir():
        for path in shard_dir.glob(".tmp-*"):
            path.unlink()
    for path in out_dir.glob(f".tmp-{MANIFEST_NAME}.*"):
        path.unlink()


def clean_output(out_dir: Path) -> None:
    """Remove what a previous vqa-extract run wrote (manifest, shards, temporary files); nothing else."""
    (out_dir / MANIFEST_NAME).unlink(missing_ok=True)
    shard_dir = out_dir / SHARD_DIR
    if shard_dir.is_dir():
        for path in shard_dir.iterdir():
            if path.is_file() and (path.suffix == ".h5" or path.name.startswith(".tmp-")):
                path.unlink()
        with contextlib.suppress(OSError):
            shard_dir.rmdir()
    for path in out_dir.glob(f".tmp-{MANIFEST_NAME}.*"):
        path.unlink()
