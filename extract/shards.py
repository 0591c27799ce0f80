"""Sharded HDF5 feature files: the writer, their attributes, the ids they store.

The manifest's life (plan, resume, checksums, verify, repair) lives in ``extract/manifest.py``.

Layout of an output directory::

    OUT/
      manifest.json          # feature set, options, provenance, the shard plan, counts, every failure
      shards/shard-00000.h5  # exists under its final name only when complete (atomic rename)

Videos are assigned to shards by a deterministic rule: the planned video ids, sorted, cut into
consecutive runs of ``shard_size``. The plan is stored in the manifest so a resumed run reuses it.

Each shard holds:

- ``ids`` (M,) utf-8 strings, the videos that succeeded, in plan order;
- per feature of fixed shape: ``<name>`` (M, ...);
- per ragged feature (leading dimension varies per video): ``<name>`` (sum of lengths, ...) and
  ``<name>__offsets`` (M + 1,) int64, video ``i`` being rows ``offsets[i]:offsets[i + 1]``.

Attributes are strings or numbers, JSON for structured values (never pickle). The file attributes:
``format``, ``feature_set``, ``provenance`` (JSON), ``options`` (JSON), ``toolkit_version``, ``created``
(UTC ISO 8601), ``shard``, ``planned`` (JSON list of the ids planned for the shard), ``failures`` (JSON
list of ``{video_id, path, reason}``), ``weights`` (``"random"`` when any backbone has random weights,
else ``"pretrained"``), and, so that a lost manifest can be rebuilt from the shards alone
(``vqa-extract repair``): ``paths`` (JSON, the planned videos' paths), ``source`` (JSON),
``shard_size``, ``num_shards`` and ``outputs`` (JSON, name -> shape and dtype). Each feature dataset
carries ``feature_set``, ``dtype``, ``shape`` (JSON, per video, ``null`` = ragged) and ``provenance``
(JSON).
"""

from __future__ import annotations

import datetime as _dt
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from pipelines.atomic import atomic_path
from pipelines.version import toolkit_version

__all__ = [
    "FORMAT",
    "SHARD_DIR",
    "FeatureSpec",
    "ShardWriter",
    "mentions_random_weights",
    "normalize_outputs",
    "read_shard_attrs",
    "shard_name",
    "decode_ids",
    "stored_ids",
    "utc_now",
]

FORMAT = "vqa-features/1"
SHARD_DIR = "shards"
OFFSETS_SUFFIX = "__offsets"
_DTYPES = ("float32", "float16", "bool", "int64", "int32", "uint8", "float64")


def __getattr__(name: str) -> Any:
    """``MANIFEST_NAME`` and ``ManifestError`` live in ``extract.manifest``; still importable from here."""
    if name in ("MANIFEST_NAME", "ManifestError"):
        from extract import manifest  # imports this module: looked up when asked, not at import

        return getattr(manifest, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def utc_now() -> str:
    """The current time as UTC ISO 8601 with seconds, e.g. ``2026-01-31T12:00:00Z``."""
    return _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def shard_name(index: int) -> str:
    """``shard-00007.h5`` for index 7."""
    return f"shard-{index:05d}.h5"


@dataclass(frozen=True)
class FeatureSpec:
    """Per-video shape and dtype of one output feature; ``shape[0] is None`` marks a ragged feature."""

    shape: tuple[int | None, ...]
    dtype: str

    @property
    def ragged(self) -> bool:
        return len(self.shape) > 0 and self.shape[0] is None

    def to_json(self) -> dict[str, Any]:
        return {"shape": list(self.shape), "dtype": self.dtype}

    def check(self, video_id: str, name: str, array: np.ndarray) -> np.ndarray:
        """Return ``array`` cast to the dtype; raise ``ValueError`` naming the video when the shape differs.

        Args:
            video_id: for the error message.
            name: the feature name, for the error message.
            array: the per-video array.

        Returns:
            The array as a C-contiguous array of ``self.dtype``.
        """
        array = np.asarray(array)
        if array.ndim != len(self.shape) or any(
            want is not None and want != got for want, got in zip(self.shape, array.shape, strict=True)
        ):
            shape = "(" + ", ".join("*" if s is None else str(s) for s in self.shape)
            shape += ",)" if len(self.shape) == 1 else ")"
            raise ValueError(
                f"video {video_id!r}: feature {name!r} has shape {array.shape}, expected {shape}"
            )
        if self.dtype != "bool" and array.dtype == np.bool_:
            raise ValueError(f"video {video_id!r}: feature {name!r} is bool, expected {self.dtype}")
        return np.ascontiguousarray(array, dtype=self.dtype)


def normalize_outputs(outputs: Mapping[str, Any]) -> dict[str, FeatureSpec]:
    """Turn a feature set's ``outputs`` (objects with ``shape``/``dtype``, or dicts) into ``FeatureSpec``s.

    Raises:
        ValueError: an unknown dtype or a name that collides with ``ids`` / an offsets dataset.
    """
    specs: dict[str, FeatureSpec] = {}
    for name, spec in outputs.items():
        if isinstance(spec, Mapping):
            shape, dtype = spec["shape"], spec["dtype"]
        else:
            shape, dtype = spec.shape, spec.dtype
        dtype = str(np.dtype(dtype)) if dtype != "bool" else "bool"
        if dtype not in _DTYPES:
            raise ValueError(
                f"feature {name!r}: unsupported dtype {dtype!r}; use one of {', '.join(_DTYPES)}"
            )
        if name == "ids" or name.endswith(OFFSETS_SUFFIX) or "/" in name or not name:
            raise ValueError(f"invalid feature name {name!r} (reserved or contains '/')")
        specs[name] = FeatureSpec(tuple(None if s is None else int(s) for s in shape), dtype)
    return specs


def _json(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True)


class ShardWriter:
    """Writes one complete shard file atomically.

    Args:
        path: the final shard path (``OUT/shards/shard-00000.h5``); written under a temporary name in the
            same directory and renamed when complete.
        feature_set: the feature-set name.
        outputs: name -> ``FeatureSpec`` (see :func:`normalize_outputs`).
        provenance: JSON-able provenance of the whole feature set; ``provenance["outputs"][name]``, when
            present, is stored on that feature's dataset, otherwise the whole provenance is.
        options: JSON-able extraction options.
        shard: the shard's index in the plan.
        planned: the ids planned for this shard (successes and failures).
        paths, source, shard_size, num_shards: the shard's place in the plan (the planned videos' paths,
            where the videos came from, the plan's shard size and length), stored for repair.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        *,
        feature_set: str,
        outputs: Mapping[str, FeatureSpec],
        provenance: Mapping[str, Any],
        options: Mapping[str, Any] | None = None,
        shard: int = 0,
        planned: Sequence[str] | None = None,
        paths: Sequence[str] | None = None,
        source: Mapping[str, Any] | None = None,
        shard_size: int | None = None,
        num_shards: int | None = None,
    ) -> None:
        self.path = Path(path)
        self.feature_set = feature_set
        self.outputs = dict(outputs)
        self.provenance = dict(provenance)
        self.options = dict(options or {})
        self.shard = shard
        self.planned = list(planned) if planned is not None else None
        self.plan_attrs = {"paths": list(paths) if paths is not None else None, "source": source,
                           "shard_size": shard_size, "num_shards": num_shards}

    def write(
        self,
        ids: Sequence[str],
        items: Sequence[Mapping[str, np.ndarray]],
        failures: Sequence[Mapping[str, str]] = (),
        *,
        before_rename: Any = None,
        attrs: Mapping[str, Any] | None = None,
    ) -> Path:
        """Write the shard: ``items[i]`` holds the features of ``ids[i]``.

        Args:
            ids: the video ids that succeeded, in order.
            items: per video, feature name -> array matching ``outputs``.
            failures: ``{video_id, path, reason}`` for the planned videos that failed (stored in the attrs).
            before_rename: optional callable run with the temporary path once it is fully written (tests
                use it to simulate a crash before the rename).
            attrs: further file attributes, stored as JSON (``vqa-extract import``: ``sources``, the
                per-video source files with their sha256).

        Returns:
            The final path.

        Raises:
            ValueError: an item lacks a feature or has the wrong shape (naming the video).
        """
        if len(ids) != len(items):
            raise ValueError(f"{len(ids)} ids but {len(items)} items")
        checked: dict[str, list[np.ndarray]] = {name: [] for name in self.outputs}
        for video_id, item in zip(ids, items, strict=True):
            missing = set(self.outputs) - set(item)
            if missing:
                raise ValueError(f"video {video_id!r}: missing feature(s) {', '.join(sorted(missing))}")
            for name, spec in self.outputs.items():
                checked[name].append(spec.check(video_id, name, item[name]))
        planned = self.planned if self.planned is not None else list(ids)
        weights = "random" if mentions_random_weights(self.provenance) else "pretrained"
        with atomic_path(self.path) as tmp:
            # HDF5 writes through a Python file object: a full disk is then a plain OSError from Python's
            # write, raised once, and the HDF5 file is closed cleanly. Written by HDF5's own driver, the
            # error came back from the close as "Can't decrement id ref count" and the process crashed
            # (SIGSEGV) at exit.
            with open(tmp, "w+b") as fh, h5py.File(fh, "w") as f:
                f.attrs["format"] = FORMAT
                f.attrs["feature_set"] = self.feature_set
                f.attrs["provenance"] = _json(self.provenance)
                f.attrs["options"] = _json(self.options)
                f.attrs["toolkit_version"] = toolkit_version()
                f.attrs["created"] = utc_now()
                f.attrs["shard"] = int(self.shard)
                f.attrs["planned"] = _json(list(planned))
                f.attrs["failures"] = _json([dict(x) for x in failures])
                f.attrs["weights"] = weights
                f.attrs["outputs"] = _json({n: spec.to_json() for n, spec in self.outputs.items()})
                for key, value in self.plan_attrs.items():
                    if value is not None:
                        f.attrs[key] = value if isinstance(value, int) else _json(value)
                for key, value in (attrs or {}).items():
                    f.attrs[key] = _json(value)
                if weights == "random":
                    f.attrs["WARNING"] = "computed with RANDOM backbone weights; not for research results"
                id_array = np.array(list(ids), dtype=object)
                f.create_dataset("ids", data=id_array, dtype=h5py.string_dtype("utf-8"))
                for name, spec in self.outputs.items():
                    ds = self._write_feature(f, name, spec, checked[name])
                    ds.attrs["feature_set"] = self.feature_set
                    ds.attrs["dtype"] = spec.dtype
                    ds.attrs["shape"] = _json(list(spec.shape))
                    per_output = self.provenance.get("outputs", {})
                    prov = per_output.get(name, self.provenance) if isinstance(per_output, Mapping) else None
                    ds.attrs["provenance"] = _json(prov if prov is not None else self.provenance)
            if before_rename is not None:
                before_rename(tmp)
        return self.path

    @staticmethod
    def _write_feature(f: h5py.File, name: str, spec: FeatureSpec, arrays: list[np.ndarray]) -> h5py.Dataset:
        if spec.ragged:
            lengths = np.array([len(a) for a in arrays], dtype=np.int64)
            offsets = np.zeros(len(arrays) + 1, dtype=np.int64)
            np.cumsum(lengths, out=offsets[1:])
            if arrays:
                flat = np.concatenate(arrays, axis=0)
            else:
                flat = np.zeros((0, *(s or 0 for s in spec.shape[1:])), dtype=spec.dtype)
            f.create_dataset(name + OFFSETS_SUFFIX, data=offsets)
            return f.create_dataset(name, data=flat)
        if arrays:
            data = np.stack(arrays, axis=0)
        else:
            data = np.zeros((0, *(s or 0 for s in spec.shape)), dtype=spec.dtype)
        return f.create_dataset(name, data=data)


def mentions_random_weights(provenance: Any) -> bool:
    """True when any ``weights`` / ``weights_sha256`` value in the (nested) provenance is ``"random"``."""
    if isinstance(provenance, Mapping):
        for key, value in provenance.items():
            if key in ("weights", "weights_sha256", "sha256") and value == "random":
                return True
            if mentions_random_weights(value):
                return True
    elif isinstance(provenance, list | tuple):
        return any(mentions_random_weights(v) for v in provenance)
    return False


def read_shard_attrs(path: str | os.PathLike) -> dict[str, Any]:
    """The attributes of a complete shard, JSON values decoded, plus ``ids`` (list of str).

    Raises:
        ManifestError: the file is not a readable shard of this format.
    """
    from extract.manifest import ManifestError  # imported when called: extract.manifest imports this module

    path = Path(path)
    try:
        with h5py.File(path, "r") as f:
            attrs = {k: (v.decode() if isinstance(v, bytes) else v) for k, v in f.attrs.items()}
            ids = decode_ids(f["ids"][()])
    except (OSError, KeyError) as err:
        raise ManifestError(f"{path}: not a readable feature shard ({err})") from err
    if attrs.get("format") != FORMAT:
        raise ManifestError(f"{path}: unknown shard format {attrs.get('format')!r}, expected {FORMAT!r}")
    for key in ("provenance", "options", "planned", "failures", "paths", "source", "outputs"):
        if key in attrs:
            attrs[key] = json.loads(attrs[key])
    attrs["ids"] = ids
    return attrs


def stored_ids(path: str | os.PathLike) -> list[str]:
    """The ``ids`` dataset of a shard file (cheap: the features are not read).

    Raises:
        ManifestError: the file cannot be read as a shard.
    """
    from extract.manifest import ManifestError  # imported when called: extract.manifest imports this module

    try:
        with h5py.File(path, "r") as f:
            return decode_ids(f["ids"][()])
    except (OSError, KeyError) as err:
        raise ManifestError(f"{path}: not a readable feature shard ({err})") from err


def decode_ids(raw: np.ndarray) -> list[str]:
    """HDF5 string ids (bytes or str) as a list of str."""
    return [s.decode() if isinstance(s, bytes) else str(s) for s in raw]
