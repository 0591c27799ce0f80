"""Feature directories made whole at once, outside an extraction run: a lost ``manifest.json`` rebuilt
from the shards' own attributes (``rebuild_manifest``, ``vqa-extract repair``), and a complete directory
written from in-memory arrays (``write_feature_dir``: tests of other packages and benchmarks make feature
directories without running backbones; also importable from ``extract.reader``). Both build the
manifest with ``extract/manifest.py``'s plan and completion steps, so the layout is exactly what
``vqa-extract`` writes.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from extract.manifest import (
    ManifestError,
    mark_complete,
    new_manifest,
    plan_shards,
    refresh_counts,
    save_manifest,
    shard_context,
    shard_stamp,
)
from extract.shards import (
    SHARD_DIR,
    FeatureSpec,
    ShardWriter,
    normalize_outputs,
    read_shard_attrs,
    shard_name,
    utc_now,
)

__all__ = ["rebuild_manifest", "write_feature_dir"]


# ============================================================================================ repair
_PLAN_ATTRS = ("source", "shard_size", "num_shards", "paths", "outputs")


def rebuild_manifest(out_dir: str | os.PathLike) -> dict[str, Any]:
    """Rebuild ``OUT/manifest.json`` from the shards' own attributes (each shard records its plan).

    Every shard of the plan must be present (a shard that was never written holds the only record of
    its videos); then the manifest is written atomically and returned.

    Raises:
        ManifestError: no shards, shards of different runs, shards missing from the plan, or shards
            written by a toolkit that did not record the plan (the message says what to do).
    """
    out_dir = Path(out_dir)
    files = sorted((out_dir / SHARD_DIR).glob("shard-*.h5"))
    if not files:
        raise ManifestError(f"{out_dir / SHARD_DIR}: no shard files to rebuild the manifest from")
    rerun = "re-run the vqa-extract command that made them (it rebuilds the manifest from its plan)"
    shards: dict[int, tuple[Path, dict[str, Any]]] = {}
    for path in files:
        attrs = read_shard_attrs(path)
        lacking = [k for k in _PLAN_ATTRS if k not in attrs]
        if lacking:
            raise ManifestError(f"{path}: does not record its plan ({', '.join(lacking)}); {rerun}")
        shards[int(attrs["shard"])] = (path, attrs)
    first = next(iter(shards.values()))[1]
    keys = ("feature_set", "options", "source", "shard_size", "num_shards", "outputs")
    for path, attrs in shards.values():
        for key in keys:
            if attrs[key] != first[key]:
                raise ManifestError(
                    f"{path}: {key} differs from the other shards'; they come from different runs"
                )
    missing = [shard_name(i) for i in range(int(first["num_shards"])) if i not in shards]
    if missing:
        raise ManifestError(
            f"{out_dir}: cannot rebuild the manifest, shard(s) {', '.join(missing[:5])} of the plan "
            f"were never written; {rerun}"
        )
    provenance = {k: v for k, v in first["provenance"].items() if k != "toolkit_version"}
    manifest = new_manifest(
        feature_set=first["feature_set"],
        outputs=normalize_outputs(first["outputs"]),
        options=first["options"],
        provenance=provenance,
        source=first["source"],
        shard_size=int(first["shard_size"]),
        plan=[list(zip(shards[i][1]["planned"], shards[i][1]["paths"], strict=True)) for i in sorted(shards)],
    )
    manifest["provenance"] = first["provenance"]
    for index in sorted(shards):
        path, attrs = shards[index]
        mark_complete(manifest, index, attrs["ids"], attrs["failures"], shard_stamp(path))
    manifest["repaired"] = utc_now()
    save_manifest(out_dir, manifest)
    return manifest


# ============================================================================================ in-memory
def write_feature_dir(
    out_dir: str | os.PathLike,
    feature_set: str,
    items: Mapping[str, Mapping[str, np.ndarray]],
    *,
    provenance: Mapping[str, Any],
    shard_size: int = 256,
    outputs: Mapping[str, Any] | None = None,
    ragged: Iterable[str] = (),
    failures: Sequence[Mapping[str, str]] = (),
) -> Path:
    """Write a complete feature directory (shards + manifest) from in-memory arrays.

    Tests of other packages use it to make feature directories without running backbones; the layout is
    exactly what ``vqa-extract`` writes.

    Args:
        out_dir: the output directory (created).
        feature_set: the feature-set name recorded in the manifest (e.g. ``"mspan"``).
        items: video id -> feature name -> per-video array. Every video has the same feature names.
        provenance: JSON-able provenance.
        shard_size: videos per shard.
        outputs: name -> ``{"shape", "dtype"}`` (or objects with those attributes); inferred from the
            arrays when omitted: a feature is ragged when its leading dimension differs between videos or
            it is named in ``ragged``.
        ragged: feature names to store ragged when inferring ``outputs``.
        failures: ``{video_id, path, reason}`` records to list in the manifest.

    Returns:
        ``out_dir`` as a Path.
    """
    out_dir = Path(out_dir)
    if not items:
        raise ValueError("write_feature_dir needs at least one video")
    specs = normalize_outputs(outputs) if outputs is not None else _infer_outputs(items, set(ragged))
    plan = plan_shards(list(items), shard_size)
    manifest = new_manifest(
        feature_set=feature_set,
        outputs=specs,
        options={},
        provenance=dict(provenance),
        source={"dataset": "in-memory"},
        shard_size=shard_size,
        plan=[[(vid, "") for vid in ids] for ids in plan],
    )
    manifest["failures"] = [dict(x) for x in failures]
    for index, ids in enumerate(plan):
        path = out_dir / SHARD_DIR / manifest["shards"][index]["name"]
        ShardWriter(
            path, feature_set=feature_set, outputs=specs, provenance=provenance,
            **shard_context(manifest, index),
        ).write(ids, [items[i] for i in ids])
        entry = manifest["shards"][index]
        entry.update(complete=True, ids=list(ids), count=len(ids), **shard_stamp(path))
    refresh_counts(manifest)
    save_manifest(out_dir, manifest)
    return out_dir


def _infer_outputs(items: Mapping[str, Mapping[str, np.ndarray]], ragged: set[str]) -> dict[str, FeatureSpec]:
    first = next(iter(items.values()))
    specs: dict[str, FeatureSpec] = {}
    for name, array in first.items():
        array = np.asarray(array)
        shapes = {np.asarray(item[name]).shape for item in items.values()}
        dims = {len(s) for s in shapes}
        if len(dims) != 1:
            raise ValueError(f"feature {name!r}: arrays of different ranks {sorted(shapes)}")
        is_ragged = name in ragged or len({s[0] for s in shapes if s}) > 1
        if len({s[1:] for s in shapes}) > 1:
            raise ValueError(f"feature {name!r}: shapes differ beyond the first dimension: {sorted(shapes)}")
        shape = tuple(array.shape)
        dtype = "bool" if array.dtype == np.bool_ else str(array.dtype)
        specs[name] = FeatureSpec((None, *shape[1:]) if is_ragged else shape, dtype)
    return specs
