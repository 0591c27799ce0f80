"""The extraction engine behind ``vqa-extract``: decode workers, model actors, shard writing, resume.

One module per part (docs/architecture.md, "Extraction engine"):

- ``job``: what a run is given and returns (``ExtractionJob``, ``EngineConfig``, ``RunSummary``, errors);
- ``run``: ``run_extraction``, the entry point (plan, manifest, backend, lock);
- ``scheduler``: the driver's loop (bounded decodes, batching, finalize, failures, shard writing);
- ``stream``: the decode stream both backends produce;
- ``local_backend``: in-process decoding and inference;
- ``ray_backend``: Ray tasks and actors; the only module that imports Ray, and only imported when a run has
  work for Ray (so ``import extract.engine`` never imports Ray);
- ``placement``: where the inference actors go on a cluster (no Ray).
"""

from extract.engine.job import (
    LOCK_NAME,
    BackendError,
    EngineConfig,
    ExtractionJob,
    FeatureSetSpec,
    OutputInUseError,
    ResumeMismatchError,
    RunSummary,
    VideoItem,
)
from extract.engine.placement import ActorPlacement, NodeInfo, plan_actors
from extract.engine.run import run_extraction
from extract.engine.scheduler import CALL_FORWARDS, CRASH_ENV

__all__ = [
    "CALL_FORWARDS",
    "CRASH_ENV",
    "LOCK_NAME",
    "ActorPlacement",
    "BackendError",
    "EngineConfig",
    "ExtractionJob",
    "FeatureSetSpec",
    "NodeInfo",
    "OutputInUseError",
    "ResumeMismatchError",
    "RunSummary",
    "VideoItem",
    "plan_actors",
    "run_extraction",
]
