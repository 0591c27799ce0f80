"""Reading a feature directory written by ``vqa-extract`` (or :func:`write_feature_dir`).

``FeatureReader(OUT)`` builds an id -> (shard, row) dict from ``OUT/manifest.json`` once, so a lookup is
one dict access and one read per feature. Shard files are opened lazily, read-only, at most ``max_open``
at a time per process; the reader is picklable and drops its open handles when it crosses a process
boundary (pickling, or a fork detected by the process id), so one reader can be handed to DataLoader
workers.

The first time a process opens a shard, the shard's stored ``ids`` are compared with the manifest's
(cheap: one small dataset), so a swapped, replaced or foreign shard stops the reader with an error naming
the file instead of giving videos other videos' features. The reader then remembers the file's identity
(device, inode, size, modification time): reopening it after it left the ``max_open`` handles is one
``open`` while that identity holds, and the full check again when it changed. Full checksums:
``vqa-extract verify OUT``. :meth:`FeatureReader.verify_checksums` (run once by every training run) compares
each shard's bytes with the manifest's sha256, hashing only the files whose size or modification time
changed since they were last checked.

Reads. A feature stored as one plain run of bytes (HDF5's contiguous layout, which ``ShardWriter``
writes: no chunks, no filters) is read with one positioned read (``preadv``) of its rows straight into
the returned array, at the offset HDF5 reports for the dataset. Any other layout (chunked or compressed
datasets written by other tools or older versions, external or virtual storage) is read through h5py, as
before; both give the same arrays. At TGIF-QA size this makes the read a few microseconds of system
time instead of the ~100 microseconds h5py's selection machinery costs per feature (see
docs/benchmarks.md, "Training data path").
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
from collections import OrderedDict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from extract.featuredir import write_feature_dir
from extract.manifest import (
    MANIFEST_NAME,
    ManifestError,
    check_checksums,
    check_stored_ids,
    load_manifest,
)
from extract.shards import (
    OFFSETS_SUFFIX,
    SHARD_DIR,
    FeatureSpec,
    decode_ids,
    normalize_outputs,
)
from pipelines.atomic import write_json_atomic

__all__ = ["FeatureReader", "ManifestError", "write_feature_dir"]


class FeatureReader:
    """Video id -> features of one feature directory.

    Args:
        out_dir: the directory holding ``manifest.json`` and ``shards/``.
        max_open: how many shard files one process keeps open (least recently used are closed).

    Attributes:
        ids: the ids of every video with features, in shard order (sorted).
        feature_set: the feature-set name (e.g. ``"mspan"``).
        outputs: feature name -> ``FeatureSpec`` (per-video shape, ``None`` leading = ragged; dtype).
        provenance: the manifest's provenance dict (backbones, weights sha256, samplers, sizes, version).
        failures: the manifest's failure records (``video_id``, ``path``, ``reason``).

    Raises:
        ManifestError: missing or unreadable manifest (naming the file).
    """

    def __init__(self, out_dir: str | os.PathLike, *, max_open: int = 64) -> None:
        self.out_dir = Path(out_dir)
        manifest = load_manifest(self.out_dir)
        self.manifest = manifest
        self.feature_set: str = manifest["feature_set"]
        self.outputs: dict[str, FeatureSpec] = normalize_outputs(manifest["outputs"])
        self.provenance: dict[str, Any] = manifest.get("provenance", {})
        self.options: dict[str, Any] = manifest.get("options", {})
        self.failures: list[dict[str, str]] = list(manifest["failures"])
        self.max_open = max(1, int(max_open))
        self._shard_paths: list[Path] = []
        self._shard_entries: list[dict[str, Any]] = []
        self._index: dict[str, tuple[int, int]] = {}
        ids: list[str] = []
        for entry in manifest["shards"]:
            if not entry.get("complete"):
                continue
            path = self.out_dir / SHARD_DIR / entry["name"]
            shard_idx = len(self._shard_paths)
            self._shard_paths.append(path)
            self._shard_entries.append(entry)
            for row, video_id in enumerate(entry["ids"]):
                if video_id in self._index:
                    where = self.out_dir / MANIFEST_NAME
                    raise ManifestError(f"{where}: video id {video_id!r} listed twice")
                self._index[video_id] = (shard_idx, row)
                ids.append(video_id)
        self.ids: list[str] = ids
        self._reset_handles()

    # ------------------------------------------------------------------ mapping protocol
    def __len__(self) -> int:
        return len(self._index)

    def __contains__(self, video_id: object) -> bool:
        return video_id in self._index

    def __iter__(self) -> Iterator[str]:
        return iter(self.ids)

    def __getitem__(self, video_id: str) -> dict[str, np.ndarray]:
        """The features of one video: name -> array with the per-video shape of ``outputs``.

        Raises:
            KeyError: the id has no features here (the message names the id and the directory, and says
                whether the extraction recorded it as failed).
        """
        shard_idx, row = self._locate(video_id)
        return {name: self._read(shard_idx, row, name) for name in self.outputs}

    def feature(self, video_id: str, name: str) -> np.ndarray:
        """One feature of one video (``self[video_id][name]`` without reading the others)."""
        shard_idx, row = self._locate(video_id)
        return self._read(shard_idx, row, name)

    def _locate(self, video_id: str) -> tuple[int, int]:
        try:
            return self._index[video_id]
        except KeyError:
            raise KeyError(self._missing_message(video_id)) from None

    def _read(self, shard_idx: int, row: int, name: str) -> np.ndarray:
        """Feature ``name`` of row ``row`` of a shard: one positioned read, or h5py for other layouts."""
        shard = self._open(shard_idx)
        ragged = self.outputs[name].ragged
        start, stop = (shard.offsets[name][row : row + 2] if ragged else (row, row + 1))
        extent = shard.extents.get(name)
        if extent is not None:
            rows = _read_rows(shard, extent, int(start), int(stop), self._shard_paths[shard_idx])
        else:  # a layout h5py has to decode
            rows = self._h5(shard_idx, shard)[name][int(start) : int(stop)]
        return rows if ragged else rows[0]

    def get(self, video_id: str, default: Any = None) -> dict[str, np.ndarray] | Any:
        """``self[video_id]`` or ``default`` when the id is absent."""
        return self[video_id] if video_id in self._index else default

    def _missing_message(self, video_id: str) -> str:
        for failure in self.failures:
            if failure.get("video_id") == video_id:
                return (
                    f"video id {video_id!r} has no features in {self.out_dir}: extraction failed "
                    f"({failure.get('reason')})"
                )
        return (
            f"video id {video_id!r} has no features in {self.out_dir} ({len(self)} videos, feature set "
            f"{self.feature_set!r}); extract it or check the id"
        )

    # ------------------------------------------------------------------ lazy per-process files
    def _reset_handles(self) -> None:
        self._pid = os.getpid()
        self._files: OrderedDict[int, _Open] = OrderedDict()  # open shards, least recently used first
        self._known: dict[int, _Known] = {}  # shards this process checked: identity, layout, offsets

    def _open(self, shard_idx: int) -> _Open:
        """The open shard (its file descriptor; an h5py handle only where a layout needs one)."""
        if self._pid != os.getpid():  # forked: handles of the parent must not be shared
            self._reset_handles()
        shard = self._files.get(shard_idx)
        if shard is not None:
            self._files.move_to_end(shard_idx)
            return shard
        path = self._shard_paths[shard_idx]
        try:
            fd = os.open(path, os.O_RDONLY)
        except OSError as err:
            raise self._unreadable(path, err) from err
        if hasattr(os, "posix_fadvise"):  # rows are read in random order: no read-ahead around each
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_RANDOM)
        known = self._known.get(shard_idx)
        h5 = None
        if known is None or known.identity != _identity(os.fstat(fd)):
            try:
                h5 = self._checked_h5(shard_idx)
                known = _describe(h5, self.outputs, _identity(os.fstat(fd)))
            except BaseException:
                os.close(fd)
                if h5 is not None:
                    h5.close()
                raise
            self._known[shard_idx] = known
            if all(known.extents.values()):  # every feature read directly: no h5py handle kept
                h5.close()
                h5 = None
        shard = _Open(fd, h5, known.extents, known.offsets)
        self._files[shard_idx] = shard
        while len(self._files) > self.max_open:
            _, old = self._files.popitem(last=False)
            old.close()
        return shard

    def _h5(self, shard_idx: int, shard: _Open) -> h5py.File:
        if shard.h5 is None:
            try:
                shard.h5 = h5py.File(self._shard_paths[shard_idx], "r")
            except OSError as err:
                raise self._unreadable(self._shard_paths[shard_idx], err) from err
        return shard.h5

    def _checked_h5(self, shard_idx: int) -> h5py.File:
        """The shard opened with h5py, its stored ids compared with the manifest's."""
        path = self._shard_paths[shard_idx]
        try:
            f = h5py.File(path, "r")
        except OSError as err:
            raise self._unreadable(path, err) from err
        try:
            problem = check_stored_ids(path, decode_ids(f["ids"][()]), self._shard_entries[shard_idx])
        except (OSError, KeyError) as err:
            problem = f"its ids cannot be read ({err})"
        if problem:
            f.close()
            raise ManifestError(
                f"{path}: {problem}; the manifest does not describe this file. Re-run the extraction "
                f"command to re-extract it (`vqa-extract verify {self.out_dir}` checks every shard)"
            )
        return f

    @staticmethod
    def _unreadable(path: Path, err: OSError) -> ManifestError:
        return ManifestError(
            f"{path}: listed as complete in the manifest but cannot be opened "
            f"({str(err).splitlines()[0]}); restore the file or extract into a new --out"
        )

    def check_readable(self) -> None:
        """Open every shard once in this process, so an unreadable one is reported here, naming the file,
        rather than inside a DataLoader worker (whose error would carry the worker's traceback).

        Raises:
            ManifestError: a shard listed as complete cannot be opened.
        """
        for shard_idx in range(len(self._shard_paths)):
            self._open(shard_idx)
        self.close()

    def verify_checksums(self, cache: str | os.PathLike | None = None) -> int:
        """Check every complete shard's bytes against the manifest's sha256 (``manifest.check_checksums``).

        Args:
            cache: a JSON file of the shards checked before (path -> size, mtime, sha256); read, and
                rewritten with this check's records (best effort: a file that cannot be written is skipped).

        Returns:
            The number of shards checked.

        Raises:
            ManifestError: one line naming the first damaged shard (and how many more) and what to do.
        """
        known = {}
        if cache is not None and Path(cache).is_file():
            try:
                known = json.loads(Path(cache).read_text(encoding="utf-8"))
            except (OSError, ValueError):
                known = {}
        known = known if isinstance(known, dict) else {}
        problems, checked = check_checksums(self.out_dir, self.manifest, known)
        if problems:
            more = f" (and {len(problems) - 1} more shard(s))" if len(problems) > 1 else ""
            raise ManifestError(
                f"{problems[0]}{more}; these features are not the ones the manifest records. Run "
                f"`vqa-extract verify {self.out_dir}`, then the extraction command again to re-extract them"
            )
        if cache is not None and checked != known:
            with contextlib.suppress(OSError):
                write_json_atomic(cache, checked)
        return len(checked)

    def close(self) -> None:
        """Close the shard files this process opened."""
        if self._pid == os.getpid():
            for shard in self._files.values():
                shard.close()
        self._reset_handles()

    def __enter__(self) -> FeatureReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_files"] = OrderedDict()
        state["_known"] = {}
        state["_pid"] = -1  # the unpickling process opens its own handles
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._reset_handles()

    def __repr__(self) -> str:
        return f"FeatureReader({str(self.out_dir)!r}, feature_set={self.feature_set!r}, videos={len(self)})"


# ============================================================================================ layouts
@dataclasses.dataclass(frozen=True)
class _Extent:
    """Where a contiguous dataset's bytes lie in its file: ``rows`` rows of ``row_shape`` from ``offset``."""

    offset: int
    dtype: np.dtype
    row_shape: tuple[int, ...]
    rows: int

    @property
    def row_bytes(self) -> int:
        return int(np.prod(self.row_shape, dtype=np.int64)) * self.dtype.itemsize


@dataclasses.dataclass
class _Known:
    """What a process learnt when it checked a shard: the file's identity, each feature's extent (None:
    read through h5py) and the ragged features' offsets."""

    identity: tuple[int, ...]
    extents: dict[str, _Extent | None]
    offsets: dict[str, np.ndarray]


@dataclasses.dataclass
class _Open:
    """An open shard: its descriptor, and an h5py handle where a feature needs one."""

    fd: int
    h5: h5py.File | None
    extents: dict[str, _Extent | None]
    offsets: dict[str, np.ndarray]

    def close(self) -> None:
        os.close(self.fd)
        if self.h5 is not None:
            self.h5.close()


def _identity(st: os.stat_result) -> tuple[int, ...]:
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


def _describe(f: h5py.File, outputs: dict[str, FeatureSpec], identity: tuple[int, ...]) -> _Known:
    offsets = {name: f[name + OFFSETS_SUFFIX][()] for name, spec in outputs.items() if spec.ragged}
    return _Known(identity, {name: _extent(f[name]) for name in outputs}, offsets)


def _extent(ds: h5py.Dataset) -> _Extent | None:
    """The dataset's extent when its rows are one plain run of bytes in the file, else None (chunked or
    filtered, external or virtual storage, never written, or a type without a plain memory layout)."""
    if ds.chunks is not None or ds.is_virtual or ds.external or ds.ndim == 0 or ds.dtype.kind not in "biuf":
        return None
    if ds.size == 0:  # nothing stored (a ragged feature whose videos all have 0 rows): nothing to read
        return _Extent(0, ds.dtype, tuple(ds.shape[1:]), int(ds.shape[0]))
    offset = ds.id.get_offset()
    if offset is None or ds.id.get_storage_size() != ds.size * ds.dtype.itemsize:
        return None
    return _Extent(int(offset), ds.dtype, tuple(ds.shape[1:]), int(ds.shape[0]))


def _read_rows(shard: _Open, extent: _Extent, start: int, stop: int, path: Path) -> np.ndarray:
    """Rows ``start:stop`` of a contiguous dataset, read into a new array ((stop - start, *row_shape))."""
    out = np.empty((stop - start, *extent.row_shape), dtype=extent.dtype)
    view = memoryview(out.reshape(-1).view(np.uint8))
    offset, done = extent.offset + start * extent.row_bytes, 0
    while done < len(view):
        try:
            n = os.preadv(shard.fd, [view[done:]], offset + done)
        except OSError as err:
            raise ManifestError(f"{path}: reading failed ({err}); `vqa-extract verify` checks the shards"
                                ) from err
        if n == 0:
            raise ManifestError(f"{path}: shorter than its layout says (truncated?); `vqa-extract verify` "
                                "checks the shards")
        done += n
    return out
