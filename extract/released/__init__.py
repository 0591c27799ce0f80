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

The formats live one family a module: ``c3d.py`` (the four cmin formats), ``masn.py``, ``mspan.py`` and
``hcrn.py``; what they share (errors, options, the ``ReleasedFormat`` / ``FormatReader`` interfaces, the
QA keys) in ``base.py``. ``RELEASED_FORMATS`` below is the registry.
"""

from __future__ import annotations

from extract.released.base import (
    RELEASED,
    FormatReader,
    ImportOptions,
    Loaded,
    Planned,
    ReleasedFormat,
    ReleasedFormatError,
    Role,
    VideoProblem,
    listing_record,
)
from extract.released.c3d import ActivityNetC3D, ActivityNetC3DSplit, TACoSC3D, TACoSC3DNpy
from extract.released.hcrn import HcrnFormat
from extract.released.masn import MasnFormat
from extract.released.mspan import MspanFormat

__all__ = [
    "RELEASED",
    "RELEASED_FORMATS",
    "FormatReader",
    "ImportOptions",
    "Loaded",
    "Planned",
    "ReleasedFormat",
    "ReleasedFormatError",
    "Role",
    "VideoProblem",
    "get_format",
    "listing_record",
]

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
