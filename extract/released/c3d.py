"""The C3D clip features of the moment-retrieval releases (``cmin``): ActivityNet Captions' and TACoS'
single HDF5 files, and CMIN's per-video ``.h5`` / ``.npy`` directories."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from extract.released.base import (
    FormatReader,
    Loaded,
    Planned,
    ReleasedFormat,
    ReleasedFormatError,
    Role,
    VideoProblem,
    load_npy,
    open_h5,
    read_file,
    two_d,
)
from pipelines.paths import resolve_under


# -------------------------------------------------------------------------------------------- C3D (cmin)
def _moment_plan(adapter: Any, keys) -> list[Planned]:
    """Every video of every split, with the duration its annotations give (the first one read)."""
    durations: dict[str, float] = {}
    for split in adapter.splits():
        for m in adapter.moments(split):
            durations.setdefault(m.video_id, float(m.duration_s))
    return [Planned(v, keys(v), durations[v]) for v in sorted(durations)]


def _clip_outputs(probe: Loaded, dtype: str) -> dict[str, dict[str, Any]]:
    return {"clips": {"shape": [None, int(probe.arrays["clips"].shape[1])], "dtype": dtype},
            "clip_times": {"shape": [None], "dtype": "float32"}}


def _clips(x: np.ndarray, origin: str, video: Planned) -> Loaded:
    """C3D rows as the ``cmin`` set: ``clips`` (T, D) and ``clip_times`` (T,), the centre of step i being
    (i + 0.5) * duration / T: CMIN's loader maps second s to step int(s * T / duration)."""
    x = two_d(x, origin, video.video_id)
    t = x.shape[0]
    times = ((np.arange(t, dtype=np.float64) + 0.5) * float(video.duration) / t).astype(np.float32)
    return Loaded({"clips": x, "clip_times": times}, {"clips": origin, "clip_times": origin})


class _C3DFormat(ReleasedFormat):
    feature_set = "cmin"

    def plan(self, adapter, options):
        return _moment_plan(adapter, self.keys)

    def keys(self, video_id: str) -> tuple[str, ...]:
        return (video_id,)

    def conversion(self, options):
        return {
            "clips": "the released rows as they are: C3D fc7 of 16-frame clips every 8 frames (PCA-500 where "
                     "the release applied it)",
            "clip_times": "(i + 0.5) * duration / T seconds, duration from the annotations: step i covers "
                          "[i, i + 1) * duration / T, as CMIN's loader (fps = T / duration)",
        }

    def sampler(self) -> dict[str, Any]:
        return {"clips": {"sampler": "released C3D clips", "clip_len": 16, "stride": 8,
                          "step_to_seconds": "fps = T / duration (CMIN datasets/ActivityNet.py, TACOS.py)"}}


class _H5C3DReader(FormatReader):
    """A single HDF5 with one entry per video: a group holding ``inner`` or, ``inner`` None, a dataset."""

    def __init__(self, path: Path, inner: str | None, expected: str) -> None:
        self.path, self.inner, self.expected = path, inner, expected
        self.file = open_h5(path, expected)

    def close(self) -> None:
        self.file.close()

    def refresh(self) -> None:
        self.file.close()
        self.file = open_h5(self.path, self.expected)

    def where(self, video):
        return f"{self.path}[{video.keys[0]}]"

    def read(self, video):
        key = next((k for k in video.keys if k in self.file), None)
        if key is None:
            raise VideoProblem(f"missing: {self.path} has no {' or '.join(map(repr, video.keys))} "
                               f"(video {video.video_id!r})")
        node = self.file[key]
        if self.inner is not None:
            if not isinstance(node, h5py.Group) or self.inner not in node:
                raise ReleasedFormatError(f"{self.path}: {key!r} is not a group holding {self.inner!r}; "
                                          f"expected {self.expected}")
            node, key = node[self.inner], f"{key}/{self.inner}"
        if not isinstance(node, h5py.Dataset):
            raise ReleasedFormatError(f"{self.path}: {key!r} is a group, not an array; "
                                      f"expected {self.expected}")
        return _clips(np.asarray(node[()]), f"{self.path}[{key}]", video)

    def outputs(self, probe, dtype):
        return _clip_outputs(probe, dtype)


class _DirC3DReader(FormatReader):
    """A directory of per-video files ``<key><suffix>`` (``.h5`` with ``feature``, or ``.npy``)."""

    def __init__(self, path: Path, suffix: str) -> None:
        if not path.is_dir():
            raise ReleasedFormatError(f"{path}: not a directory; expected one {suffix} file per video")
        self.path, self.suffix = path, suffix

    def where(self, video):
        return str(self.path / (video.keys[0] + self.suffix))

    def read(self, video):
        key = video.keys[0]
        path = resolve_under(self.path, key + self.suffix, source=f"video id {video.video_id!r}")
        if not path.is_file():
            raise VideoProblem(f"missing: {path} does not exist (video {video.video_id!r})")
        if self.suffix == ".npy":
            x, record = load_npy(path, key, video.video_id)
        else:
            x, record = self._load_h5(path, video)
        loaded = _clips(x, str(path), video)
        loaded.files.append(record)
        return loaded

    def _load_h5(self, path: Path, video: Planned) -> tuple[np.ndarray, dict[str, Any]]:
        data, record = read_file(path)
        try:
            with h5py.File(io.BytesIO(data), "r") as f:
                node = f.get("feature")
                if not isinstance(node, h5py.Dataset):
                    raise VideoProblem(f"{path} (video {video.video_id!r}): no dataset 'feature'; expected "
                                       "CMIN's per-video layout")
                return np.asarray(node[()]), record
        except OSError as err:
            raise VideoProblem(f"{path} (video {video.video_id!r}): not a readable HDF5 file "
                               f"({str(err).splitlines()[0]})") from None

    def outputs(self, probe, dtype):
        return _clip_outputs(probe, dtype)


class ActivityNetC3D(_C3DFormat):
    name = "activitynet-c3d"
    datasets = ("activitynet-captions",)
    roles = {"c3d": Role("file", "the challenge release sub_activitynet_v1-3.c3d.hdf5",
                         lambda d, t, o: ("sub_activitynet_v1-3.c3d.hdf5",))}
    description = "ActivityNet challenge C3D release: group v_<id> holding c3d_features (T, 500)"
    loader = "2D-TAN lib/datasets/activitynet.py get_video_features: f[vid]['c3d_features'][:]"
    expected = "the ActivityNet challenge layout: a group per video holding 'c3d_features' (T, D)"

    def reader(self, paths, options):
        return _H5C3DReader(paths["c3d"], "c3d_features", self.expected)


class ActivityNetC3DSplit(_C3DFormat):
    name = "activitynet-c3d-h5"
    datasets = ("activitynet-captions",)
    roles = {"features": Role("dir", "a directory of <id>.h5, each with a dataset 'feature' (T, D)")}
    description = "the challenge C3D split per video: <id>.h5 with 'feature' (T, 500), read by CMIN"
    loader = "CMIN utils.py load_feature (fr['feature']), datasets/ActivityNet.py ('%s.h5' % vid)"

    def reader(self, paths, options):
        return _DirC3DReader(paths["features"], ".h5")


class TACoSC3D(_C3DFormat):
    name = "tacos-c3d"
    datasets = ("tacos",)
    roles = {"c3d": Role("file", "tall_c3d_features.hdf5", lambda d, t, o: ("tall_c3d_features.hdf5",))}
    description = "TACoS C3D (TALL / 2D-TAN release): one dataset per video, named <video>.avi, (T, 4096)"
    loader = "2D-TAN lib/datasets/tacos.py get_video_features: f[vid][:] with vid = '<name>.avi'"
    expected = "one dataset (T, D) per video named after the video file (s13-d21.avi)"

    def keys(self, video_id):
        return (video_id + ".avi", video_id)

    def reader(self, paths, options):
        return _H5C3DReader(paths["c3d"], None, self.expected)


class TACoSC3DNpy(_C3DFormat):
    name = "tacos-c3d-npy"
    datasets = ("tacos",)
    roles = {"features": Role("dir", "a directory of <name>.npy (T, D), the .avi dropped")}
    description = "TACoS C3D per video: <name>.npy (T, D), the file name without .avi, read by CMIN"
    loader = "CMIN utils.py load_feature (np.load), datasets/TACOS.py ('%s.npy' % vid[:-4])"

    def reader(self, paths, options):
        return _DirC3DReader(paths["features"], ".npy")
