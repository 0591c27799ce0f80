"""Reading a feature directory written by ``vqa-extract`` (or :func:`write_feature_dir`).

``FeatureReader(OUT)`` builds an id -> (shard, row) dict from ``OUT/manifest.json`` once, so a lookup is
one dict access and one HDF5 row read. HDF5 files are opened lazily, read-only, at most ``max_open`` at a
time per process; the reader is picklable and drops its open handles when it crosses a process boundary
(pickling, or a fork detected by the process id), so one reader can be handed to DataLoader workers.

Whenever a shard is opened its stored ``ids`` are compared with the manifest's (cheap: one small
dataset), so a swapped, replaced or foreign shard stops the reader with an error naming the file
instead of giving videos other videos' features. :meth:`FeatureReader.verify_checksums` (run once by
every training run) compares each shard's bytes with the manifest's sha256, hashing only the files whose
size or modification time changed since they were last checked. Full checksums: ``vqa-extract verify OUT``.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections import OrderedDict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from extract.manifest import (
    MANIFEST_NAME,
    ManifestError,
    check_checksums,
    check_stored_ids,
    load_manifest,
    write_feature_dir,
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
        try:
            shard_idx, row = self._index[video_id]
        except KeyError:
            raise KeyError(self._missing_message(video_id)) from None
        f = self._file(shard_idx)
        out: dict[str, np.ndarray] = {}
        for name, spec in self.outputs.items():
            if spec.ragged:
                start, stop = self._offsets(shard_idx, f, name)[row : row + 2]
                out[name] = f[name][int(start) : int(stop)]
            else:
                out[name] = f[name][row]
        return out

    def feature(self, video_id: str, name: str) -> np.ndarray:
        """One feature of one video (``self[video_id][name]`` without reading the others)."""
        try:
            shard_idx, row = self._index[video_id]
        except KeyError:
            raise KeyError(self._missing_message(video_id)) from None
        f = self._file(shard_idx)
        if self.outputs[name].ragged:
            start, stop = self._offsets(shard_idx, f, name)[row : row + 2]
            return f[name][int(start) : int(stop)]
        return f[name][row]

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
        self._files: OrderedDict[int, h5py.File] = OrderedDict()
        self._offset_cache: dict[tuple[int, str], np.ndarray] = {}

    def _file(self, shard_idx: int) -> h5py.File:
        if self._pid != os.getpid():  # forked: handles of the parent must not be shared
            self._reset_handles()
        f = self._files.get(shard_idx)
        if f is not None:
            self._files.move_to_end(shard_idx)
            return f
        path = self._shard_paths[shard_idx]
        try:
            f = h5py.File(path, "r")
        except OSError as err:
            raise ManifestError(
                f"{path}: listed as complete in the manifest but cannot be opened "
                f"({str(err).splitlines()[0]}); restore the file or extract into a new --out"
            ) from err
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
        self._files[shard_idx] = f
        while len(self._files) > self.max_open:
            _, old = self._files.popitem(last=False)
            old.close()
        return f

    def check_readable(self) -> None:
        """Open every shard once in this process, so an unreadable one is reported here, naming the file,
        rather than inside a DataLoader worker (whose error would carry the worker's traceback).

        Raises:
            ManifestError: a shard listed as complete cannot be opened.
        """
        for shard_idx in range(len(self._shard_paths)):
            self._file(shard_idx)
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

    def _offsets(self, shard_idx: int, f: h5py.File, name: str) -> np.ndarray:
        key = (shard_idx, name)
        offsets = self._offset_cache.get(key)
        if offsets is None:
            offsets = f[name + OFFSETS_SUFFIX][()]
            self._offset_cache[key] = offsets
        return offsets

    def close(self) -> None:
        """Close the shard files this process opened."""
        if self._pid == os.getpid():
            for f in self._files.values():
                f.close()
        self._reset_handles()

    def __enter__(self) -> FeatureReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_files"] = OrderedDict()
        state["_offset_cache"] = {}
        state["_pid"] = -1  # the unpickling process opens its own handles
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._reset_handles()

    def __repr__(self) -> str:
        return f"FeatureReader({str(self.out_dir)!r}, feature_set={self.feature_set!r}, videos={len(self)})"
