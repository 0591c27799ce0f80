"""MSPAN's two released directories of per-video ``.npy`` files (appearance, motion) -> the ``mspan`` set."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path

from extract.released.base import (
    FormatReader,
    ImportOptions,
    Loaded,
    Planned,
    ReleasedFormat,
    ReleasedFormatError,
    Role,
    VideoProblem,
    load_npy,
    question_keys,
    two_d,
)
from pipelines.paths import resolve_under

MSPAN_FRAMES = 16  # --num_frames (train_sh/*.sh)



# -------------------------------------------------------------------------------------------- MSPAN
def _mspan_dir(role: str) -> Role:
    def names(dataset: str, task: str | None, options: ImportOptions) -> tuple[str, ...]:
        prefix = f"tgif-qa_{task}" if dataset == "tgif" else dataset
        kind = "appearance_pool5" if role == "appearance" else "motion"
        return (f"{prefix}_{kind}_{options.num_frames or MSPAN_FRAMES}_feat",)

    return Role("dir", f"MSPAN's {role} directory of <key>.npy", names)


class MspanFormat(ReleasedFormat):
    """MSPAN's per-video ``.npy`` files: ``<appearance dir>/<key>.npy`` and ``<motion dir>/<key>.npy``."""

    name = "mspan"
    feature_set = "mspan"
    datasets = ("tgif", "msvd-qa", "msrvtt-qa")
    roles = {"appearance": _mspan_dir("appearance"), "motion": _mspan_dir("motion")}
    description = "MSPAN's features: one .npy per video and stream, (16, 2048) each"
    loader = "MSPAN DataLoader.py VideoQADataset.__getitem__ ('<dir>/%s.npy' % video_id, shapes asserted)"
    uses = ("num_frames", "dtype")

    def resolve(self, options, dataset):
        options = super().resolve(options, dataset)
        return replace(options, num_frames=options.num_frames or MSPAN_FRAMES)

    def plan(self, adapter, options):
        return [Planned(v, tuple(map(str, ks))) for v, ks in sorted(question_keys(adapter).items())]

    def reader(self, paths, options):
        return _MspanReader(paths, options.num_frames)

    def conversion(self, options):
        return {"appearance, motion": f"the released (N, D) arrays as they are; N = {options.num_frames} "
                                      "required (the official loader asserts it)",
                "keys": "TGIF-QA: the lowest question key of the GIF with both files (MSPAN extracts one "
                        "file per key of the same GIF)"}


class _MspanReader(FormatReader):
    def __init__(self, paths: Mapping[str, Path], num_frames: int) -> None:
        for role in ("appearance", "motion"):
            if not paths[role].is_dir():
                raise ReleasedFormatError(f"{paths[role]}: not a directory; expected MSPAN's {role} "
                                          "directory of <key>.npy files")
        self.paths, self.n = dict(paths), num_frames

    def _path(self, role: str, key: str, video: Planned) -> Path:
        return resolve_under(self.paths[role], key + ".npy", source=f"video {video.video_id!r}")

    def where(self, video):
        return str(self._path("appearance", video.keys[0], video))

    def read(self, video):
        key = _mspan_key(video, self._path)
        arrays, origin, files = {}, {}, []
        for role in ("appearance", "motion"):
            path = self._path(role, key, video)
            x, record = load_npy(path, key, video.video_id)
            arrays[role] = two_d(x, f"{path}", video.video_id, f"({self.n}, D)")
            origin[role] = str(path)
            files.append({**record, "role": role})
        for role in ("appearance", "motion"):
            if arrays[role].shape[0] != self.n:
                raise VideoProblem(f"{origin[role]} (video {video.video_id!r}): {arrays[role].shape[0]} "
                                   f"rows, expected {self.n} (--num-frames; the official loader asserts it)")
        return Loaded(arrays, origin, files)

    def outputs(self, probe, dtype):
        return {r: {"shape": list(probe.arrays[r].shape), "dtype": dtype} for r in ("appearance", "motion")}


def _mspan_key(video: Planned, path_of) -> str:
    for key in video.keys:
        if path_of("appearance", key, video).is_file() and path_of("motion", key, video).is_file():
            return key
    for key in video.keys:
        have = {r: path_of(r, key, video).is_file() for r in ("appearance", "motion")}
        if any(have.values()):
            there = next(r for r, v in have.items() if v)
            absent = next(r for r, v in have.items() if not v)
            raise VideoProblem(f"files disagree on key {key!r} (video {video.video_id!r}): "
                               f"{path_of(there, key, video)} exists but {path_of(absent, key, video)} "
                               "does not")
    raise VideoProblem(f"missing: no {path_of('appearance', video.keys[0], video).name} (keys "
                       f"{', '.join(video.keys)}) in {path_of('appearance', video.keys[0], video).parent} "
                       f"(video {video.video_id!r})")
