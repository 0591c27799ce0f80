"""Dataset adapters and their explicit registry.

``DATASETS`` is written out by hand (no registration by import side effect). Build an adapter with
``get_dataset(name)(root, task=None)``; see ``docs/architecture.md`` ("Dataset adapters").
"""

from __future__ import annotations

from pipelines.datasets.activitynet_qa import ActivityNetQAAdapter
from pipelines.datasets.base import (
    VIDEO_EXTENSIONS,
    DatasetAdapter,
    DatasetFormatError,
    MissingVideo,
    MomentRecord,
    QARecord,
    VideoRef,
)
from pipelines.datasets.folder import FolderAdapter
from pipelines.datasets.how2qa import How2QAAdapter
from pipelines.datasets.moments import ActivityNetCaptionsAdapter, TACoSAdapter
from pipelines.datasets.msqa import MSRVTTQAAdapter, MSVDQAAdapter
from pipelines.datasets.tgif import DemoAdapter, TGIFQAAdapter

__all__ = [
    "DATASETS",
    "VIDEO_EXTENSIONS",
    "DatasetAdapter",
    "DatasetFormatError",
    "MissingVideo",
    "MomentRecord",
    "QARecord",
    "VideoRef",
    "get_dataset",
]

DATASETS: dict[str, type[DatasetAdapter]] = {
    "tgif": TGIFQAAdapter,
    "msvd-qa": MSVDQAAdapter,
    "msrvtt-qa": MSRVTTQAAdapter,
    "activitynet-qa": ActivityNetQAAdapter,
    "how2qa": How2QAAdapter,
    "activitynet-captions": ActivityNetCaptionsAdapter,
    "tacos": TACoSAdapter,
    "demo": DemoAdapter,
    "folder": FolderAdapter,
}


def _check_registry() -> None:
    for key, cls in DATASETS.items():
        if cls.name != key:
            raise RuntimeError(f"DATASETS[{key!r}] holds {cls.__name__} whose name is {cls.name!r}")


_check_registry()


def get_dataset(name: str) -> type[DatasetAdapter]:
    """The adapter class registered as ``name``.

    Raises:
        KeyError: listing the registered names.
    """
    try:
        return DATASETS[name]
    except KeyError:
        names = ", ".join(sorted(DATASETS))
        raise KeyError(f"unknown dataset {name!r}; registered datasets: {names}") from None
