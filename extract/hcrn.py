"""Export an ``hcrn`` feature directory to the file layout of HCRN (thaolmk54/hcrn-videoqa).

HCRN-based code reads two HDF5 files per dataset (per task for TGIF-QA):

- ``<name>_appearance_feat.h5``: ``resnet_features`` (N, 8, 16, Da) float32 and ``ids`` (N,);
- ``<name>_motion_feat.h5``: ``resnext_features`` (N, 8, Dm) float32 and ``ids`` (N,);

and maps ids to rows itself, so the row order is free (we keep the sorted order of the feature
directory). HCRN stores integer ids (``video123`` -> 123 for MSRVTT-QA, ``vid7`` -> 7 for MSVD-QA). The
export writes integer ``ids`` when every video id is a common non-digit prefix followed by a number and
those numbers are unique, otherwise the ids as utf-8 strings; both files also hold ``video_names``, the
original string ids, and an ``provenance`` attribute (JSON) copied from the feature directory.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import h5py
import numpy as np

from extract.reader import FeatureReader
from pipelines.atomic import atomic_path

__all__ = ["HCRN_KEYS", "HCRNExportError", "export_hcrn", "hcrn_ids"]

HCRN_KEYS = {"appearance": "resnet_features", "motion": "resnext_features"}
_SOURCE = {"appearance": "appearance_clips", "motion": "motion_clips"}
_ID_PATTERN = re.compile(r"^(\D*)(\d+)$")


class HCRNExportError(ValueError):
    """The feature directory cannot be exported in HCRN's layout (the message says why)."""


def hcrn_ids(video_ids: list[str], id_format: str = "auto") -> np.ndarray:
    """The ``ids`` dataset: int64 when possible (or requested), else utf-8 strings.

    Args:
        video_ids: the video ids in row order.
        id_format: ``"auto"``, ``"int"`` (error when impossible) or ``"str"``.

    Returns:
        (N,) int64 or object (str) array.
    """
    if id_format not in ("auto", "int", "str"):
        raise ValueError(f"id_format must be auto, int or str, got {id_format!r}")
    if id_format != "str":
        matches = [_ID_PATTERN.match(v) for v in video_ids]
        prefixes = {m.group(1) for m in matches if m}
        if all(matches) and len(prefixes) <= 1:
            numbers = np.array([int(m.group(2)) for m in matches], dtype=np.int64)
            if len(set(numbers.tolist())) == len(numbers):
                return numbers
        if id_format == "int":
            bad = next((v for v, m in zip(video_ids, matches, strict=True) if not m), None)
            why = f"{bad!r} does not end in a number" if bad else "the prefixes or numbers are not unique"
            raise HCRNExportError(f"cannot write integer ids: {why}; use --ids str")
    return np.array(video_ids, dtype=object)


def export_hcrn(
    features_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    name: str = "tgif-qa_frameqa",
    id_format: str = "auto",
) -> dict[str, Path]:
    """Write ``<name>_appearance_feat.h5`` and ``<name>_motion_feat.h5`` from an ``hcrn`` feature directory.

    Args:
        features_dir: output of ``vqa-extract --features hcrn``.
        out_dir: where the two files go (created); each is written atomically.
        name: the file prefix HCRN expects, e.g. ``tgif-qa_frameqa``, ``msrvtt-qa``, ``msvd-qa``.
        id_format: ``"auto"``, ``"int"`` or ``"str"`` (see :func:`hcrn_ids`).

    Returns:
        ``{"appearance": path, "motion": path}``.

    Raises:
        HCRNExportError: the directory holds another feature set, or is empty.
    """
    reader = FeatureReader(features_dir)
    missing = [src for src in _SOURCE.values() if src not in reader.outputs]
    if missing:
        raise HCRNExportError(
            f"{features_dir} holds the {reader.feature_set!r} feature set without {', '.join(missing)}; "
            "extract it with --features hcrn"
        )
    if not reader.ids:
        raise HCRNExportError(f"{features_dir} holds no video features to export")
    if "/" in name or not name:
        raise HCRNExportError(f"invalid --name {name!r}: a file-name prefix such as tgif-qa_frameqa")
    ids = hcrn_ids(list(reader.ids), id_format)
    out_dir = Path(out_dir)
    written: dict[str, Path] = {}
    provenance = json.dumps(reader.provenance, sort_keys=True)
    for kind, key in HCRN_KEYS.items():
        spec = reader.outputs[_SOURCE[kind]]
        final = out_dir / f"{name}_{kind}_feat.h5"
        with atomic_path(final) as tmp, h5py.File(tmp, "w") as f:
            shape = (len(reader.ids), *spec.shape)
            dset = f.create_dataset(key, shape=shape, dtype=np.float32)
            if ids.dtype == object:
                f.create_dataset("ids", data=ids, dtype=h5py.string_dtype("utf-8"))
            else:
                f.create_dataset("ids", data=ids)
            f.create_dataset(
                "video_names", data=np.array(reader.ids, dtype=object), dtype=h5py.string_dtype("utf-8")
            )
            f.attrs["provenance"] = provenance
            f.attrs["feature_set"] = reader.feature_set
            f.attrs["source"] = str(Path(features_dir).resolve())
            for row, video_id in enumerate(reader.ids):
                dset[row] = reader[video_id][_SOURCE[kind]].astype(np.float32)
        written[kind] = final
    reader.close()
    return written
