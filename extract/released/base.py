"""What every released format shares: the errors, the import options, one planned / loaded video, a
source's role, the ``ReleasedFormat`` and ``FormatReader`` interfaces, the QA keys of the HCRN-lineage
preprocessing, and the readers' small helpers (HDF5 files and arrays, per-video files, shapes)."""

from __future__ import annotations

import hashlib
import io
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from extract.hcrn import HCRNExportError, hcrn_rows

RELEASED = "features released by the authors"


class ReleasedFormatError(ValueError):
    """A source is unreadable or not of the named format; the message names the file (and the key)."""


class VideoProblem(Exception):
    """One video cannot be imported; the message (one line) names the file and the key. Recorded as failed."""


@dataclass(frozen=True)
class ImportOptions:
    """What an import may be told (recorded in the manifest's ``options``).

    Attributes:
        max_frames: masn T: the first T rows are kept, shorter videos padded with ``frame_mask`` False (the
            official ``video_pad``); None: MASN's own (20 TGIF-QA, 30 MSVD-QA / MSRVTT-QA).
        max_objects: masn M, object rows per frame (MASN's ``obj_max_num`` 10); a frame with more fails.
        num_frames: mspan N, rows per video (16); another count fails, as the official loader asserts.
        dtype: the stored dtype of feature arrays (``float32`` | ``float16``); boxes, times and masks keep
            theirs.
    """

    max_frames: int | None = None
    max_objects: int | None = None
    num_frames: int | None = None
    dtype: str = "float32"

    def __post_init__(self) -> None:
        for name in ("max_frames", "max_objects", "num_frames"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"{name} must be >= 1 when given, got {value}")
        if self.dtype not in ("float32", "float16"):
            raise ValueError(f"dtype must be 'float32' or 'float16', got {self.dtype!r}")


@dataclass(frozen=True)
class Planned:
    """One video to import: our id, its candidate keys in the files (tried in order), its duration."""

    video_id: str
    keys: tuple[str, ...]
    duration: float | None = None


@dataclass
class Loaded:
    """One video read: the set's arrays, where each came from (``file[key]``), per-video files read."""

    arrays: dict[str, np.ndarray]
    origin: dict[str, str]
    files: list[dict[str, Any]] = field(default_factory=list)


@dataclass(frozen=True)
class Role:
    """One source of a format: a ``file`` or a ``dir``, and the official names looked up in a directory.

    ``names(dataset, task, options)`` gives the candidate names, first match wins.
    """

    kind: str
    what: str
    names: Any = None


def open_h5(path: Path, expected: str) -> h5py.File:
    """``path`` opened read-only; not HDF5 is a ``ReleasedFormatError`` naming what was expected."""
    try:
        return h5py.File(path, "r")
    except OSError as err:
        raise ReleasedFormatError(
            f"{path}: not a readable HDF5 file ({str(err).splitlines()[0]}); expected {expected}"
        ) from None


def array_at(f: h5py.File | h5py.Group, key: str, path: Path, expected: str) -> h5py.Dataset:
    """The array at ``key``; a group there is a ``ReleasedFormatError``."""
    node = f[key]
    if not isinstance(node, h5py.Dataset):
        raise ReleasedFormatError(f"{path}: {key!r} is a group, not an array; expected {expected}")
    return node


def read_file(path: Path) -> tuple[bytes, dict[str, Any]]:
    """A per-video file's bytes and its record (name, bytes, sha256)."""
    data = path.read_bytes()
    return data, {"file": path.name, "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}


def load_npy(path: Path, key: str, video_id: str) -> tuple[np.ndarray, dict[str, Any]]:
    """A per-video ``.npy`` array (no pickle) and its record; unreadable is a ``VideoProblem``."""
    data, record = read_file(path)
    try:
        return np.load(io.BytesIO(data), allow_pickle=False), record
    except (ValueError, OSError, EOFError) as err:
        raise VideoProblem(f"{path}: key {key!r} (video {video_id!r}): not a readable .npy array "
                           f"({str(err).splitlines()[0]})") from None


def two_d(x: np.ndarray, origin: str, video_id: str, what: str = "(T, D)") -> np.ndarray:
    """``x`` when it is 2-d with at least one row, else a ``VideoProblem``."""
    if x.ndim != 2 or x.shape[0] < 1:
        raise VideoProblem(f"{origin} (video {video_id!r}): shape {x.shape}, expected {what} with T >= 1")
    return x


# ============================================================================================ formats
class ReleasedFormat:
    """One released layout. Subclasses set the attributes and implement :meth:`plan` and :meth:`reader`.

    Attributes:
        name: ``vqa-extract import FORMAT``'s name; feature_set: the set it maps onto; datasets: the
            adapters it fits.
        roles: role -> :class:`Role`; description: one line; loader: the official loader it follows.
        default_shard_size: videos per shard unless ``--shard-size`` says otherwise.
    """

    name = ""
    feature_set = ""
    datasets: tuple[str, ...] = ()
    roles: dict[str, Role] = {}
    description = ""
    loader = ""
    default_shard_size = 256
    uses: tuple[str, ...] = ("dtype",)

    def resolve(self, options: ImportOptions, dataset: str) -> ImportOptions:
        """``options`` with the fields this format does not use cleared (so the manifest records what ran)."""
        keep = set(self.uses)
        return replace(options, **{f.name: f.default for f in fields(options) if f.name not in keep})

    def plan(self, adapter: Any, options: ImportOptions) -> list[Planned]:
        raise NotImplementedError

    def reader(self, paths: Mapping[str, Path], options: ImportOptions) -> FormatReader:
        raise NotImplementedError

    def conversion(self, options: ImportOptions) -> dict[str, Any]:
        """How the released arrays become the set's outputs (recorded in the provenance)."""
        return {}

    def sampler(self) -> dict[str, Any]:
        """What the rows are in time, where the format says (recorded as the provenance's ``samplers``)."""
        return {}

    def default_paths(self, given: Path, dataset: str, task: str | None, options: ImportOptions
                      ) -> dict[str, Path]:
        """Each role's path under the directory ``given``, by the official names (first match)."""
        out = {}
        for role, spec in self.roles.items():
            names = spec.names(dataset, task, options) if spec.names else ()
            found = [given / sub / n for n in names for sub in ("", "feat_r6_vsync2", "vfeat")
                     if (given / sub / n).exists()]
            if not found:
                raise ReleasedFormatError(
                    f"{given}: holds none of {', '.join(names) or 'the files'} ({self.name} {role}); name "
                    f"the {spec.kind} with {role}=PATH")
            out[role] = found[0]
        return out


class FormatReader:
    """Reads videos from opened sources (a context manager); :meth:`read` one video, :meth:`outputs`."""

    def __enter__(self) -> FormatReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        pass

    def refresh(self) -> None:
        """Called after each shard: release what the HDF5 library keeps for every object read while a file
        stays open (about 6 KB a group: 130 MB over ActivityNet's 20,000 videos), by reopening it."""

    def where(self, video: Planned) -> str:
        """Where the video is looked up (the plan's ``paths`` entry)."""
        raise NotImplementedError

    def read(self, video: Planned) -> Loaded:
        """The set's arrays of one video (not yet checked against the outputs).

        Raises:
            VideoProblem: the video cannot be imported (recorded as failed).
            ReleasedFormatError: a source is not of the format (the import stops).
        """
        raise NotImplementedError

    def outputs(self, probe: Loaded, dtype: str) -> dict[str, dict[str, Any]]:
        """The set's outputs (``{name: {"shape", "dtype"}}``), sizes taken from a video that was read."""
        raise NotImplementedError


# -------------------------------------------------------------------------------------------- QA keys
def question_keys(adapter: Any) -> dict[str, list[int]]:
    """Our video id -> the integer ids the HCRN-lineage preprocessing keyed its features by, ascending
    (TGIF-QA: the task's question keys; MSVD-QA / MSRVTT-QA: the annotations' ``video_id``)."""
    try:
        rows = hcrn_rows(adapter)
    except HCRNExportError as err:
        raise ReleasedFormatError(str(err)) from None
    out: dict[str, list[int]] = {}
    for number, video_id in rows:
        out.setdefault(video_id, []).append(number)
    return out


def common_key(video: Planned, tables: Mapping[str, tuple[Path, Any]]) -> str:
    """The first of the video's keys that every file holds.

    Raises:
        VideoProblem: ``missing`` when no file holds any key; files disagree when some hold one.
    """
    for key in video.keys:
        if all(key in table for _, table in tables.values()):
            return key
    for key in video.keys:
        has = [str(path) for path, table in tables.values() if key in table]
        if has:
            lacks = sorted({str(path) for path, table in tables.values() if key not in table})
            raise VideoProblem(f"files disagree on key {key!r} (video {video.video_id!r}): in {has[0]} but "
                               f"not in {lacks[0]}")
    first = next(iter(tables.values()))[0]
    raise VideoProblem(f"missing: {first} has none of the keys {', '.join(video.keys)} (video "
                       f"{video.video_id!r}); the official loader would feed zeros")


def listing_record(path: Path) -> dict[str, Any]:
    """A directory source's record: its files' count and bytes and a sha256 of their sorted (name, size)
    listing (the files' own sha256 are recorded per video, in their shard's ``sources`` attribute)."""
    entries = sorted((e.name, e.stat().st_size) for e in os.scandir(path) if e.is_file())
    digest = hashlib.sha256("".join(f"{n}\t{s}\n" for n, s in entries).encode()).hexdigest()
    return {"directory": path.name, "files": len(entries), "bytes": sum(s for _, s in entries),
            "listing_sha256": digest}
