"""Export an ``hcrn`` feature directory to the file layout of HCRN (thaolmk54/hcrn-videoqa).

HCRN-based code reads two HDF5 files per dataset (per task for TGIF-QA):

- ``<name>_appearance_feat.h5``: ``resnet_features`` (N, 8, 16, Da) float32 and ``ids`` (N,) integers;
- ``<name>_motion_feat.h5``: ``resnext_features`` (N, 8, Dm) float32 and ``ids`` (N,) integers.

How HCRN finds a question's features (its ``DataLoader.py``): the question file holds one integer
``video_id`` per question; the loader builds ``{str(id): row}`` from the ``ids`` dataset and looks up
``str(video_id)``. What that integer is depends on the dataset (its ``preprocess`` scripts):

- TGIF-QA: the ``key`` column of the task's question CSV, one per question row (HCRN extracts one row
  per distinct ``(gif_name, key)`` pair, so a GIF asked several questions has several rows);
- MSVD-QA and MSRVTT-QA: the annotation JSON's integer ``video_id`` (MSVD's ``vid<N>`` of
  ``youtube_mapping.txt``; MSRVTT's ``video<N>``).

:func:`hcrn_rows` derives exactly those ids from the dataset adapter, so the export writes one row per
id HCRN will look up, with the features of the right video. Both files also hold ``video_names`` (our
string id of each row) and a ``provenance`` attribute (JSON) copied from the feature directory.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from extract.reader import FeatureReader
from pipelines.atomic import atomic_path

__all__ = ["HCRN_DATASETS", "HCRN_KEYS", "HCRNExport", "HCRNExportError", "export_hcrn", "hcrn_rows"]

HCRN_KEYS = {"appearance": "resnet_features", "motion": "resnext_features"}
HCRN_DATASETS = ("tgif", "msvd-qa", "msrvtt-qa")
_SOURCE = {"appearance": "appearance_clips", "motion": "motion_clips"}


class HCRNExportError(ValueError):
    """The feature directory cannot be exported in HCRN's layout (the message says why)."""


@dataclass
class HCRNExport:
    """What :func:`export_hcrn` wrote: the two files, the number of rows, the ids skipped (no features)."""

    paths: dict[str, Path]
    rows: int
    skipped: list[tuple[int, str]] = field(default_factory=list)


def default_name(adapter: Any) -> str:
    """HCRN's file prefix: ``tgif-qa_<task>``, ``msvd-qa``, ``msrvtt-qa``."""
    return f"tgif-qa_{adapter.task}" if adapter.name == "tgif" else adapter.name


def hcrn_rows(adapter: Any) -> list[tuple[int, str]]:
    """``(HCRN id, our video id)`` for every id HCRN's loader will look up, sorted by id.

    Args:
        adapter: a ``tgif`` (task set), ``msvd-qa`` or ``msrvtt-qa`` adapter.

    Raises:
        HCRNExportError: another dataset, a TGIF-QA key that is not an integer, or one key naming two GIFs.
    """
    if adapter.name not in HCRN_DATASETS:
        raise HCRNExportError(f"HCRN export supports {', '.join(HCRN_DATASETS)}, not {adapter.name!r}")
    ids: dict[int, str] = {}
    for split in adapter.splits():
        for record in adapter.records(split):
            if adapter.name == "tgif":
                key = record.qid.split("-", 1)[1].split("-L", 1)[0]  # qid = <task>-<key>[-L<line>]
                if not key.isdigit():
                    raise HCRNExportError(
                        f"TGIF-QA question {record.qid!r}: key {key!r} is not an integer; HCRN stores "
                        "integer keys"
                    )
                number = int(key)
            else:
                number = adapter.video_number(record.video_id)
            if ids.setdefault(number, record.video_id) != record.video_id:
                raise HCRNExportError(
                    f"{adapter.name}: id {number} names two videos ({ids[number]!r} and "
                    f"{record.video_id!r}); HCRN could not tell them apart"
                )
    return sorted(ids.items())


def export_hcrn(
    features_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    adapter: Any,
    name: str | None = None,
    allow_missing: bool = False,
) -> HCRNExport:
    """Write ``<name>_appearance_feat.h5`` and ``<name>_motion_feat.h5`` from an ``hcrn`` feature directory.

    Args:
        features_dir: output of ``vqa-extract --features hcrn``.
        out_dir: where the two files go (created); each is written atomically.
        adapter: the dataset adapter of the annotations HCRN will train on (see :func:`hcrn_rows`).
        name: the file prefix HCRN expects; default ``tgif-qa_<task>``, ``msvd-qa`` or ``msrvtt-qa``.
        allow_missing: skip the ids whose video has no features (HCRN would fail on them) instead of
            refusing.

    Raises:
        HCRNExportError: another feature set, nothing to export, or videos without features.
    """
    reader = FeatureReader(features_dir)
    missing = [src for src in _SOURCE.values() if src not in reader.outputs]
    if missing:
        raise HCRNExportError(
            f"{features_dir} holds the {reader.feature_set!r} feature set without {', '.join(missing)}; "
            "extract it with --features hcrn"
        )
    name = name or default_name(adapter)
    if "/" in name or not name:
        raise HCRNExportError(f"invalid --name {name!r}: a file-name prefix such as tgif-qa_frameqa")
    rows = hcrn_rows(adapter)
    skipped = [(i, v) for i, v in rows if v not in reader]
    if skipped and not allow_missing:
        shown = ", ".join(sorted({v for _, v in skipped})[:5])
        raise HCRNExportError(
            f"{len(skipped)} of {len(rows)} HCRN ids name videos without features in {features_dir} "
            f"(e.g. {shown}); HCRN would fail on them. Extract them, or pass --allow-missing to leave "
            "them out"
        )
    rows = [(i, v) for i, v in rows if v in reader]
    if not rows:
        raise HCRNExportError(f"{features_dir} holds no features of the annotated videos to export")
    out_dir = Path(out_dir)
    written: dict[str, Path] = {}
    ids = np.array([i for i, _ in rows], dtype=np.int64)
    names = np.array([v for _, v in rows], dtype=object)
    for kind, key in HCRN_KEYS.items():
        spec = reader.outputs[_SOURCE[kind]]
        final = out_dir / f"{name}_{kind}_feat.h5"
        with atomic_path(final) as tmp, h5py.File(tmp, "w") as f:
            dset = f.create_dataset(key, shape=(len(rows), *spec.shape), dtype=np.float32)
            f.create_dataset("ids", data=ids)
            f.create_dataset("video_names", data=names, dtype=h5py.string_dtype("utf-8"))
            f.attrs["provenance"] = json.dumps(reader.provenance, sort_keys=True)
            f.attrs["feature_set"] = reader.feature_set
            f.attrs["source"] = str(Path(features_dir).resolve())
            for row, (_, video_id) in enumerate(rows):
                dset[row] = reader[video_id][_SOURCE[kind]].astype(np.float32)
        written[kind] = final
    reader.close()
    return HCRNExport(written, len(rows), skipped)
