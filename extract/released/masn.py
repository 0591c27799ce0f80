"""MASN's four released HDF5 files (appearance, motion, objects, motion_objects) -> the ``masn`` set."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from extract.released.base import (
    FormatReader,
    ImportOptions,
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

#: MASN's v_max_length per dataset (main.py / main_msvd.py / main_msrvtt.py defaults)
MASN_FRAMES = {"tgif": 20, "msvd-qa": 30, "msrvtt-qa": 30}
MASN_OBJECTS = 10  # obj_max_num (data_utils/dataset.py)

BOX_TOLERANCE = 1e-3  # x2/w - x1/w == bw/w up to float32 rounding of the released boxes



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
                self.files[role] = open_h5(self.paths[role], self.expected)
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
        key = common_key(video, tables)
        raw, origin = {}, {}
        for part, (path, table) in tables.items():
            origin[part] = f"{path}[{key}]"
            raw[part] = np.asarray(array_at(table, key, path, self.expected)[()])
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
