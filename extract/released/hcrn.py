"""HCRN's released ``<name>_appearance_feat.h5`` / ``<name>_motion_feat.h5`` (with ``ids``) -> the ``hcrn``
set."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np

from extract.released.base import (
    FormatReader,
    Loaded,
    Planned,
    ReleasedFormat,
    ReleasedFormatError,
    Role,
    VideoProblem,
    array_at,
    common_key,
    open_h5,
    question_keys,
)


# -------------------------------------------------------------------------------------------- HCRN
def _hcrn_role(role: str) -> Role:
    return Role("file", f"HCRN's {role} file <name>_{role}_feat.h5",
                lambda d, t, o: (f"{'tgif-qa_' + str(t) if d == 'tgif' else d}_{role}_feat.h5",))


_HCRN = {"appearance": ("resnet_features", "appearance_clips"),
         "motion": ("resnext_features", "motion_clips")}


class HcrnFormat(ReleasedFormat):
    """HCRN's pair: ``resnet_features`` (N, 8, 16, Da) and ``resnext_features`` (N, 8, Dm), rows found by
    ``ids`` (the integer keys of ``extract.hcrn.hcrn_rows``)."""

    name = "hcrn"
    feature_set = "hcrn"
    datasets = ("tgif", "msvd-qa", "msrvtt-qa")
    roles = {"appearance": _hcrn_role("appearance"), "motion": _hcrn_role("motion")}
    description = "HCRN's <name>_appearance_feat.h5 and <name>_motion_feat.h5 (export-hcrn writes them)"
    loader = "HCRN DataLoader.py: {str(id): row} from 'ids', then resnet_features / resnext_features[row]"
    default_shard_size = 128

    def plan(self, adapter, options):
        return [Planned(v, tuple(map(str, ks))) for v, ks in sorted(question_keys(adapter).items())]

    def reader(self, paths, options):
        return _HcrnReader(paths)

    def conversion(self, options):
        return {"appearance_clips, motion_clips": "the rows as they are; TGIF-QA: the lowest question key of "
                                                  "the GIF present in both files"}


class _HcrnReader(FormatReader):
    def __init__(self, paths: Mapping[str, Path]) -> None:
        self.paths, self.files, self.rows, self.names = dict(paths), {}, {}, {}
        try:
            for role, (dset, _) in _HCRN.items():
                expected = f"HCRN's layout: datasets {dset!r} and 'ids'"
                f = self.files[role] = open_h5(self.paths[role], expected)
                for name in (dset, "ids"):
                    if name not in f:
                        raise ReleasedFormatError(f"{self.paths[role]}: no dataset {name!r}; "
                                                  f"expected {expected}")
                    array_at(f, name, self.paths[role], expected)
                self.rows[role] = _row_index(f["ids"][()], self.paths[role])
                if "video_names" in f:  # written by our export: our id of each row
                    self.names[role] = [n.decode() if isinstance(n, bytes) else str(n)
                                        for n in f["video_names"]]
        except ReleasedFormatError:
            self.close()
            raise

    def close(self) -> None:
        for f in self.files.values():
            f.close()

    def where(self, video):
        return f"{self.paths['appearance']}[ids={video.keys[0]}]"

    def read(self, video):
        tables = {role: (self.paths[role], self.rows[role]) for role in _HCRN}
        key = common_key(video, tables)
        arrays, origin = {}, {}
        for role, (dset, out) in _HCRN.items():
            row = self.rows[role][key]
            origin[out] = f"{self.paths[role]}[{dset}, ids={key}]"
            names = self.names.get(role)
            if names is not None and names[row] != video.video_id:
                raise VideoProblem(f"{self.paths[role]}: ids={key} is video {names[row]!r} in its "
                                   f"video_names, but the annotations say {video.video_id!r}")
            arrays[out] = np.asarray(self.files[role][dset][row])
        _check_hcrn(arrays, origin, video.video_id)
        return Loaded(arrays, origin)

    def outputs(self, probe, dtype):
        return {out: {"shape": list(probe.arrays[out].shape), "dtype": dtype} for _, out in _HCRN.values()}


def _row_index(ids: np.ndarray, path: Path) -> dict[str, int]:
    """``{str(id): row}`` as HCRN's loader builds it (a dict comprehension: an id that repeats keeps its
    last row)."""
    if ids.ndim != 1 or ids.dtype.kind not in "iu":
        raise ReleasedFormatError(f"{path}: 'ids' is {ids.dtype} of shape {ids.shape}; expected HCRN's (N,) "
                                  "integer ids")
    out: dict[str, int] = {}
    for row, value in enumerate(ids.tolist()):
        out[str(value)] = row
    return out


def _check_hcrn(arrays: Mapping[str, np.ndarray], origin: Mapping[str, str], video_id: str) -> None:
    for out, ndim in (("appearance_clips", 3), ("motion_clips", 2)):
        if arrays[out].ndim != ndim:
            raise VideoProblem(f"{origin[out]} (video {video_id!r}): shape {arrays[out].shape}, expected "
                               f"{ndim} dimensions")
    if arrays["appearance_clips"].shape[0] != arrays["motion_clips"].shape[0]:
        raise VideoProblem(f"files disagree on {video_id!r}: {origin['appearance_clips']} has "
                           f"{arrays['appearance_clips'].shape[0]} clips, {origin['motion_clips']} has "
                           f"{arrays['motion_clips'].shape[0]}")
