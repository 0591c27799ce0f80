"""Feature files released by the papers' authors, read the way their official loaders read them.

``vqa-extract import FORMAT`` (``extract/importer.py``) turns them into a feature directory of the feature
set the model trains from, keyed by the ids our dataset adapters look up. This module holds the formats:
which files each reads (roles, with the official file names looked up in a directory), which key each of
our videos has in them, and how one video's arrays become the set's outputs. Loader lines are cited in
docs/features.md ("Importing released features").

| format | set | files (role) | key of one of our videos |
|---|---|---|---|
| ``activitynet-c3d`` | cmin | ``sub_activitynet_v1-3.c3d.hdf5`` (c3d): ``v_<id>/c3d_features`` | the id |
| ``activitynet-c3d-h5`` | cmin | a directory of ``<id>.h5``, dataset ``feature`` (CMIN) | the id |
| ``tacos-c3d`` | cmin | ``tall_c3d_features.hdf5`` (c3d): dataset ``<id>.avi`` | id + ``.avi`` |
| ``tacos-c3d-npy`` | cmin | a directory of ``<id>.npy`` (CMIN drops ``.avi``) | the id |
| ``masn`` | masn | four HDF5 files (appearance, motion, objects, motion_objects) | see below |
| ``mspan`` | mspan | two directories of ``<key>.npy`` (appearance, motion) | see below |
| ``hcrn`` | hcrn | ``<name>_appearance_feat.h5``, ``<name>_motion_feat.h5`` with ``ids`` | see below |

The QA formats key a video as the HCRN-lineage preprocessing did (``extract.hcrn.hcrn_rows``): TGIF-QA by
the task's question keys (one entry per question: the lowest key present is read), MSVD-QA and MSRVTT-QA
by the annotations' integer ``video_id`` N; MASN's files write those as ``str(key)``, ``vid<N>``,
``video<N>``.

Problems are of two kinds. :class:`ReleasedFormatError` (the import stops, one line naming the file and the
key): a file that is not of the named format (not HDF5, a group where a dataset belongs, a missing group).
:class:`VideoProblem` (the video is recorded as failed, the import goes on; the reason names the file and
the key): a video the files lack (``missing: ...``; the official MASN loader would feed zeros instead), a
wrong shape or size, NaN or infinite values (checked by the importer), files that disagree on a video, and
an unreadable per-video file of a directory format.
"""

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
from pipelines.paths import resolve_under

__all__ = [
    "RELEASED_FORMATS",
    "ImportOptions",
    "Loaded",
    "Planned",
    "ReleasedFormat",
    "ReleasedFormatError",
    "VideoProblem",
    "get_format",
]

RELEASED = "features released by the authors"
#: MASN's v_max_length per dataset (main.py / main_msvd.py / main_msrvtt.py defaults)
MASN_FRAMES = {"tgif": 20, "msvd-qa": 30, "msrvtt-qa": 30}
MASN_OBJECTS = 10  # obj_max_num (data_utils/dataset.py)
MSPAN_FRAMES = 16  # --num_frames (train_sh/*.sh)
BOX_TOLERANCE = 1e-3  # x2/w - x1/w == bw/w up to float32 rounding of the released boxes


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


def _h5(path: Path, expected: str) -> h5py.File:
    try:
        return h5py.File(path, "r")
    except OSError as err:
        raise ReleasedFormatError(
            f"{path}: not a readable HDF5 file ({str(err).splitlines()[0]}); expected {expected}"
        ) from None


def _dataset(f: h5py.File | h5py.Group, key: str, path: Path, expected: str) -> h5py.Dataset:
    node = f[key]
    if not isinstance(node, h5py.Dataset):
        raise ReleasedFormatError(f"{path}: {key!r} is a group, not an array; expected {expected}")
    return node


def _read_file(path: Path) -> tuple[bytes, dict[str, Any]]:
    """A per-video file's bytes and its record (name, bytes, sha256)."""
    data = path.read_bytes()
    return data, {"file": path.name, "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}


def _load_npy(path: Path, key: str, video_id: str) -> tuple[np.ndarray, dict[str, Any]]:
    data, record = _read_file(path)
    try:
        return np.load(io.BytesIO(data), allow_pickle=False), record
    except (ValueError, OSError, EOFError) as err:
        raise VideoProblem(f"{path}: key {key!r} (video {video_id!r}): not a readable .npy array "
                           f"({str(err).splitlines()[0]})") from None


def _two_d(x: np.ndarray, origin: str, video_id: str, what: str = "(T, D)") -> np.ndarray:
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
    x = _two_d(x, origin, video.video_id)
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
        self.file = _h5(path, expected)

    def close(self) -> None:
        self.file.close()

    def refresh(self) -> None:
        self.file.close()
        self.file = _h5(self.path, self.expected)

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
            x, record = _load_npy(path, key, video.video_id)
        else:
            x, record = self._load_h5(path, video)
        loaded = _clips(x, str(path), video)
        loaded.files.append(record)
        return loaded

    def _load_h5(self, path: Path, video: Planned) -> tuple[np.ndarray, dict[str, Any]]:
        data, record = _read_file(path)
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


# -------------------------------------------------------------------------------------------- MASN
_MASN_FILES = {
    "tgif": {"appearance": ("res152_avgpool.hdf5",), "motion": ("tgif_i3d_hw7_perclip_avgpool.hdf5",),
             "objects": ("tgif_btup_f_obj10.hdf5",),
             "motion_objects": ("tgif_i3d_roialign_hw7_perclip_avgpool_obj10.hdf5",
                                "tgif_i3d_roialign_hw7_perclip_avgpool.hdf5")},
    **{d: {"appearance": (f"{p}_res152_avgpool.hdf5",), "motion": (f"{p}_i3d_avgpool_perclip.hdf5",),
           "objects": (f"{p}_btup_f_obj10.hdf5",),
           "motion_objects": (f"{p}_i3d_roialign_perclip_obj10.hdf5",)}
       for d, p in (("msvd-qa", "msvd"), ("msrvtt-qa", "msrvtt"))},
}
_MASN_PARTS = ("appearance", "motion", "objects", "object_boxes", "motion_objects")


def _masn_role(role: str) -> Role:
    return Role("file", f"MASN's {role} HDF5", lambda d, t, o: _MASN_FILES.get(d, {}).get(role, ()))


class MasnFormat(ReleasedFormat):
    """MASN's four files: appearance (T, Da), motion (T, Dm), objects (``image_features`` (T, M, Da) and
    ``spatial_features`` (T, M, 6)), motion objects (T, M, Dm); keyed by ``str(key)`` (TGIF-QA), ``vid<N>``,
    ``video<N>``."""

    name = "masn"
    feature_set = "masn"
    datasets = ("tgif", "msvd-qa", "msrvtt-qa")
    roles = {r: _masn_role(r) for r in ("appearance", "motion", "objects", "motion_objects")}
    description = "MASN's released HDF5 files (ResNet-152, I3D, bottom-up objects, I3D RoIAlign)"
    loader = "MASN data_utils/dataset.py get_video_feature (dataset_msvd.py, dataset_msrvtt.py)"
    default_shard_size = 64  # about 3.5 MB per video at T = 20, M = 10, 2048-d
    uses = ("max_frames", "max_objects", "dtype")

    def resolve(self, options, dataset):
        options = super().resolve(options, dataset)
        return replace(options, max_frames=options.max_frames or MASN_FRAMES[dataset],
                       max_objects=options.max_objects or MASN_OBJECTS)

    def plan(self, adapter, options):
        keys = question_keys(adapter)
        if adapter.name == "tgif":  # the question keys, then the GIF name (a file keyed by name)
            return [Planned(v, (*map(str, keys[v]), v)) for v in sorted(keys)]
        prefix = "vid" if adapter.name == "msvd-qa" else "video"
        return [Planned(v, tuple(f"{prefix}{n}" for n in keys[v])) for v in sorted(keys)]

    def reader(self, paths, options):
        return _MasnReader(paths, options)

    def conversion(self, options):
        return {
            "frames": f"the first {options.max_frames} rows kept, shorter videos padded with zero rows and "
                      "frame_mask False (the official video_pad / video_3d_pad)",
            "objects": f"up to {options.max_objects} rows per frame, object_mask True on every row the file "
                       "holds for a kept frame (the official model attends to all of them)",
            "object_boxes": "spatial_features unchanged: [x1/w, y1/h, x2/w, y2/h, bw/w, bh/h] is MASN's "
                            "encoding (adaptive_detection_features_converter.py) and ours",
            "missing": "recorded as failed (the official loader feeds zeros of one frame instead)",
        }


class _MasnReader(FormatReader):
    expected = ("MASN's layout: one (T, ...) dataset per key; the object file with groups 'image_features' "
                "and 'spatial_features'")

    def __init__(self, paths: Mapping[str, Path], options: ImportOptions) -> None:
        self.paths, self.options = dict(paths), options
        self._open()

    def refresh(self) -> None:
        self.close()
        self._open()

    def _open(self) -> None:
        self.files = {}
        try:
            for role in ("appearance", "motion", "objects", "motion_objects"):
                self.files[role] = _h5(self.paths[role], self.expected)
            for group in ("image_features", "spatial_features"):
                if not isinstance(self.files["objects"].get(group), h5py.Group):
                    raise ReleasedFormatError(f"{self.paths['objects']}: no group {group!r}; expected "
                                              f"{self.expected}")
        except ReleasedFormatError:
            self.close()
            raise

    def close(self) -> None:
        for f in self.files.values():
            f.close()

    def _tables(self) -> dict[str, tuple[Path, Any]]:
        """Output part -> (file, the group or file holding one dataset per key)."""
        o = self.files["objects"]
        return {"appearance": (self.paths["appearance"], self.files["appearance"]),
                "motion": (self.paths["motion"], self.files["motion"]),
                "objects": (self.paths["objects"], o["image_features"]),
                "object_boxes": (self.paths["objects"], o["spatial_features"]),
                "motion_objects": (self.paths["motion_objects"], self.files["motion_objects"])}

    def where(self, video):
        return f"{self.paths['appearance']}[{video.keys[0]}]"

    def read(self, video):
        tables = self._tables()
        key = _common_key(video, tables)
        raw, origin = {}, {}
        for part, (path, table) in tables.items():
            origin[part] = f"{path}[{key}]"
            raw[part] = np.asarray(_dataset(table, key, path, self.expected)[()])
        _check_masn(raw, origin, video.video_id, self.options.max_objects)
        return _masn_arrays(raw, origin, self.options)

    def outputs(self, probe, dtype):
        a = probe.arrays
        t, m = a["frame_mask"].shape[0], a["object_mask"].shape[1]
        da, dm = a["appearance"].shape[-1], a["motion"].shape[-1]
        for part, want in (("objects", da), ("motion_objects", dm)):
            if a[part].shape[-1] != want:
                raise ReleasedFormatError(
                    f"{probe.origin[part]}: {part} have {a[part].shape[-1]} channels but the global "
                    f"{'appearance' if part == 'objects' else 'motion'} has {want}; MASN needs them equal")
        return {"appearance": {"shape": [t, da], "dtype": dtype},
                "motion": {"shape": [t, dm], "dtype": dtype},
                "objects": {"shape": [t, m, da], "dtype": dtype},
                "object_boxes": {"shape": [t, m, 6], "dtype": "float32"},
                "motion_objects": {"shape": [t, m, dm], "dtype": dtype},
                "frame_mask": {"shape": [t], "dtype": "bool"},
                "object_mask": {"shape": [t, m], "dtype": "bool"}}


def _common_key(video: Planned, tables: Mapping[str, tuple[Path, Any]]) -> str:
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


def _check_masn(raw: Mapping[str, np.ndarray], origin: Mapping[str, str], video_id: str, max_objects: int
                ) -> None:
    """Ranks, agreement of T and M across the files, at most ``max_objects`` rows, MASN's box encoding."""
    want = {"appearance": 2, "motion": 2, "objects": 3, "object_boxes": 3, "motion_objects": 3}
    for part, ndim in want.items():
        if raw[part].ndim != ndim or raw[part].shape[0] < 1:
            raise VideoProblem(f"{origin[part]} (video {video_id!r}): shape {raw[part].shape}, expected "
                               f"{ndim} dimensions with T >= 1")
    for part in _MASN_PARTS[1:]:
        if raw[part].shape[0] != raw["appearance"].shape[0]:
            raise VideoProblem(f"files disagree on {video_id!r}: {origin['appearance']} has "
                               f"{raw['appearance'].shape[0]} frames, {origin[part]} has "
                               f"{raw[part].shape[0]}")
    for part in ("object_boxes", "motion_objects"):
        if raw[part].shape[1] != raw["objects"].shape[1]:
            raise VideoProblem(f"files disagree on {video_id!r}: {origin['objects']} has "
                               f"{raw['objects'].shape[1]} objects per frame, {origin[part]} has "
                               f"{raw[part].shape[1]}")
    if raw["objects"].shape[1] > max_objects:
        raise VideoProblem(f"{origin['objects']} (video {video_id!r}): {raw['objects'].shape[1]} objects per "
                           f"frame, more than --max-objects {max_objects}")
    boxes = raw["object_boxes"]
    if boxes.shape[2] != 6:
        raise VideoProblem(f"{origin['object_boxes']} (video {video_id!r}): boxes of {boxes.shape[2]} "
                           "values, expected 6: [x1/w, y1/h, x2/w, y2/h, bw/w, bh/h]")
    if not (np.allclose(boxes[..., 2] - boxes[..., 0], boxes[..., 4], atol=BOX_TOLERANCE)
            and np.allclose(boxes[..., 3] - boxes[..., 1], boxes[..., 5], atol=BOX_TOLERANCE)):
        raise VideoProblem(f"{origin['object_boxes']} (video {video_id!r}): the boxes are not MASN's "
                           "[x1/w, y1/h, x2/w, y2/h, bw/w, bh/h] (x2 - x1 differs from the width)")


def _masn_arrays(raw: Mapping[str, np.ndarray], origin: dict[str, str], options: ImportOptions) -> Loaded:
    """Truncate / pad to T frames and M objects, with the masks (the official loader's padding)."""
    t, m = options.max_frames, options.max_objects
    n, k = min(raw["appearance"].shape[0], t), raw["objects"].shape[1]
    out = {}
    for part in _MASN_PARTS:
        x = raw[part][:n]
        full = np.zeros((t, *([m] if x.ndim == 3 else []), x.shape[-1]), dtype=np.float32)
        if x.ndim == 3:
            full[:n, :k] = x
        else:
            full[:n] = x
        out[part] = full
    out["frame_mask"] = np.arange(t) < n
    out["object_mask"] = out["frame_mask"][:, None] & (np.arange(m) < k)[None, :]
    origin = {**origin, "frame_mask": origin["appearance"], "object_mask": origin["objects"]}
    return Loaded(out, origin)


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
            x, record = _load_npy(path, key, video.video_id)
            arrays[role] = _two_d(x, f"{path}", video.video_id, f"({self.n}, D)")
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
                f = self.files[role] = _h5(self.paths[role], expected)
                for name in (dset, "ids"):
                    if name not in f:
                        raise ReleasedFormatError(f"{self.paths[role]}: no dataset {name!r}; "
                                                  f"expected {expected}")
                    _dataset(f, name, self.paths[role], expected)
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
        key = _common_key(video, tables)
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


# ============================================================================================ registry
# Written out by hand.
RELEASED_FORMATS: dict[str, ReleasedFormat] = {
    "activitynet-c3d": ActivityNetC3D(),
    "activitynet-c3d-h5": ActivityNetC3DSplit(),
    "tacos-c3d": TACoSC3D(),
    "tacos-c3d-npy": TACoSC3DNpy(),
    "masn": MasnFormat(),
    "mspan": MspanFormat(),
    "hcrn": HcrnFormat(),
}


def get_format(name: str) -> ReleasedFormat:
    """The registered format ``name``.

    Raises:
        KeyError: listing the formats.
    """
    try:
        return RELEASED_FORMATS[name]
    except KeyError:
        raise KeyError(f"unknown format {name!r}; one of {', '.join(RELEASED_FORMATS)}") from None


def listing_record(path: Path) -> dict[str, Any]:
    """A directory source's record: its files' count and bytes and a sha256 of their sorted (name, size)
    listing (the files' own sha256 are recorded per video, in their shard's ``sources`` attribute)."""
    entries = sorted((e.name, e.stat().st_size) for e in os.scandir(path) if e.is_file())
    digest = hashlib.sha256("".join(f"{n}\t{s}\n" for n, s in entries).encode()).hexdigest()
    return {"directory": path.name, "files": len(entries), "bytes": sum(s for _, s in entries),
            "listing_sha256": digest}
