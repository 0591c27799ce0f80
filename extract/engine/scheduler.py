"""The scheduler: one loop in the driver that owns every video's and shard's state.

It starts decodes (bounded), batches the decoded chunks of many videos for the inference workers (a bounded
number queued per worker), combines a video's outputs with ``FeatureSet.finalize`` once all came back,
records failures, and writes each shard (then the manifest) as soon as all its videos settled. It talks to
a backend (``LocalBackend`` or ``RayBackend``) through the methods of :class:`Backend` only.

Crash injection for tests: the environment variable ``VQA_EXTRACT_CRASH`` = ``after-shard:N`` kills the
process with SIGKILL right after the N-th shard file of this run was renamed into place (before the manifest
records it); ``in-shard:N`` kills it while the N-th shard is still under its temporary name.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from extract.engine.job import EngineConfig, VideoItem
from extract.manifest import mark_complete, save_manifest, shard_context, shard_stamp
from extract.shards import SHARD_DIR, FeatureSpec, ShardWriter

log = logging.getLogger(__name__)

CRASH_ENV = "VQA_EXTRACT_CRASH"
#: an inference call gathers chunks worth about this many forward passes of ``batch_frames`` images, so
#: the padding of a call's last, partial forward pass (feature sets pad it for batch-independent values)
#: is amortised
CALL_FORWARDS = 16


class Backend(Protocol):
    """What the scheduler asks of a backend (``LocalBackend``, ``RayBackend``)."""

    #: hand a batch to an idle worker at once, without waiting for a full call
    eager_dispatch: bool
    num_workers: int
    decode_slots: int
    description: str

    def start_decode(self, video_id: str, path: str) -> Any: ...
    def next_item(self, stream: Any) -> tuple[dict, Any]: ...
    def submit_infer(self, worker: int, payloads: list) -> Any: ...
    def wait(self, streams: list, futures: list, timeout: float) -> tuple[list, list]: ...
    def get_infer(self, future: Any) -> list[dict]: ...
    def release(self, payload: Any) -> None: ...
    def is_lost(self, err: BaseException) -> bool: ...
    def is_gone(self, err: BaseException) -> bool: ...
    def shutdown(self) -> None: ...


# ============================================================================================ state
@dataclass
class VideoState:
    shard: int
    item: VideoItem
    chunks_total: int | None = None
    partials: dict[int, dict] = field(default_factory=dict)
    frames: int = 0
    finished: bool = False
    #: extractions of this video started before this one (a lost node or worker restarts a video)
    attempts: int = 0
    #: the node that decoded it (Ray backend)
    node: str | None = None


@dataclass
class ShardState:
    index: int
    planned: list[str]
    remaining: int
    results: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)
    failures: dict[str, dict[str, str]] = field(default_factory=dict)
    nodes: dict[str, str] = field(default_factory=dict)


@dataclass
class Chunk:
    video: VideoState
    seq: int
    payload: Any
    frames: int
    isolated: bool = False


# ============================================================================================ scheduler
class Scheduler:
    """The driver's loop over one run's incomplete shards (``run``); counts what it did for the summary."""

    def __init__(
        self,
        *,
        backend: Backend,
        fs,
        outputs: dict[str, FeatureSpec],
        manifest: dict,
        out_dir: Path,
        options_json: dict,
        batch_frames: int,
        config: EngineConfig,
        items_by_id: dict[str, VideoItem],
    ) -> None:
        self.backend = backend
        self.fs = fs
        self.outputs = outputs
        self.manifest = manifest
        self.out_dir = out_dir
        self.options_json = options_json
        self.call_frames = max(1, int(batch_frames)) * CALL_FORWARDS
        workers = backend.num_workers
        self.max_active = config.max_active_decodes or max(2, 2 * backend.decode_slots)
        self.max_buffered = config.max_buffered_chunks or max(8, 4 * workers + 2 * self.max_active)
        self.progress_enabled = config.progress
        self.max_attempts = 1 + max(0, int(config.retries))
        self.items_by_id = items_by_id
        self.frames = 0
        self.done_this_run = 0
        self.failed_this_run = 0
        self.shards_written = 0
        self.first_settled: float | None = None
        self.crash = parse_crash_env()

        self.shards: dict[int, ShardState] = {}
        self.queue: deque[VideoState] = deque()
        for index, entry in enumerate(manifest["shards"]):
            if entry["complete"]:
                continue
            state = ShardState(index, list(entry["videos"]), len(entry["videos"]))
            self.shards[index] = state
            for video_id in entry["videos"]:
                self.queue.append(VideoState(index, items_by_id[video_id]))
        self.total = len(self.queue)

    # -------------------------------------------------------------- main loop
    def run(self) -> None:
        from tqdm import tqdm

        self.bar = tqdm(
            total=self.total,
            unit="video",
            dynamic_ncols=True,
            disable=not self.progress_enabled,
            file=sys.stderr,
            desc="extract",
            smoothing=0.1,
        )
        self.t0 = time.monotonic()
        active: dict[Any, VideoState] = {}  # stream -> video
        ready_chunks: deque[Chunk] = deque()
        inflight: dict[Any, tuple[int, list[Chunk]]] = {}
        load = [0] * self.backend.num_workers
        try:
            # videos known to be missing fail at once; shards made only of them are written at once
            for video in [v for v in self.queue if v.item.known_failure is not None]:
                self._fail(video, video.item.known_failure)
            self.queue = deque(v for v in self.queue if v.item.known_failure is None)

            while self.queue or active or ready_chunks or inflight:
                buffered = len(ready_chunks) + sum(len(c) for _, c in inflight.values())
                # 1. start decodes (bounded)
                while self.queue and len(active) < self.max_active and buffered < self.max_buffered:
                    video = self.queue.popleft()
                    active[self.backend.start_decode(video.item.video_id, video.item.path)] = video
                # 2. dispatch inference batches
                ready_frames = sum(c.frames for c in ready_chunks)
                can_consume = bool(active) and buffered < self.max_buffered
                for worker in sorted(range(len(load)), key=lambda w: load[w]):
                    if not ready_chunks or load[worker] >= 2:
                        continue
                    idle = self.backend.eager_dispatch and load[worker] == 0
                    if ready_frames < self.call_frames and can_consume and not idle:
                        continue
                    batch = self._take_batch(ready_chunks)
                    ready_frames -= sum(c.frames for c in batch)
                    future = self.backend.submit_infer(worker, [c.payload for c in batch])
                    inflight[future] = (worker, batch)
                    load[worker] += 1
                # 3. wait for something to happen
                buffered = len(ready_chunks) + sum(len(c) for _, c in inflight.values())
                streams = list(active) if buffered < self.max_buffered else []
                if not streams and not inflight:
                    if ready_chunks:
                        continue  # nothing in flight: the dispatch above sends what is buffered
                    if active:  # buffer full of nothing? cannot happen; consume anyway to make progress
                        streams = list(active)
                ready_streams, ready_futures = self.backend.wait(streams, list(inflight), timeout=1.0)
                for stream in ready_streams:
                    self._consume(stream, active, ready_chunks)
                for future in ready_futures:
                    worker, batch = inflight.pop(future)
                    load[worker] -= 1
                    self._collect(future, batch, ready_chunks)
                self._refresh_bar()
        finally:
            self.bar.close()

    def _take_batch(self, ready_chunks: deque[Chunk]) -> list[Chunk]:
        if ready_chunks[0].isolated:
            return [ready_chunks.popleft()]
        batch = [ready_chunks.popleft()]
        frames = batch[0].frames
        while (
            ready_chunks
            and not ready_chunks[0].isolated
            and frames + ready_chunks[0].frames <= self.call_frames
        ):
            chunk = ready_chunks.popleft()
            batch.append(chunk)
            frames += chunk.frames
        return batch

    def _consume(self, stream: Any, active: dict, ready_chunks: deque[Chunk]) -> None:
        video = active[stream]
        try:
            header, payload = self.backend.next_item(stream)
        except StopIteration:
            header, payload = {"kind": "failed", "reason": "decode stream ended without a result"}, None
        except Exception as err:  # noqa: BLE001 - a crashed decode worker (after Ray's retries) fails this video
            if self.backend.is_gone(err):
                raise
            if self.backend.is_lost(err):
                del active[stream]
                self._retry(video, f"its decode worker was lost: {short(err)}")
                return
            header, payload = {"kind": "failed", "reason": f"decode worker failed: {short(err)}"}, None
        kind = header["kind"]
        if header.get("node"):
            video.node = header["node"]
        if kind == "chunk":
            if not video.finished:
                ready_chunks.append(Chunk(video, header["seq"], payload, header["frames"]))
            return
        del active[stream]
        if kind == "failed":
            where = f" (on node {video.node})" if video.node else ""
            self._fail(video, header["reason"] + where)
        else:
            video.chunks_total = header["chunks"]
            self._maybe_finalize(video)

    def _collect(self, future: Any, batch: list[Chunk], ready_chunks: deque[Chunk]) -> None:
        try:
            partials = self.backend.get_infer(future)
            if len(partials) != len(batch):
                raise RuntimeError(f"infer returned {len(partials)} outputs for {len(batch)} chunks")
        except Exception as err:  # noqa: BLE001 - handled: split the batch, or fail the one video
            if self.backend.is_gone(err):
                raise
            if self.backend.is_lost(err):  # a node or actor went away: extract these videos again
                for chunk in batch:
                    self._retry(chunk.video, f"its inference worker was lost: {short(err)}")
                return
            videos = {id(c.video) for c in batch}
            if len(videos) > 1:
                log.warning(
                    "inference failed on a batch of %d videos (%s); retrying them one by one",
                    len(videos),
                    short(err),
                )
                for chunk in reversed(batch):
                    chunk.isolated = True
                    ready_chunks.appendleft(chunk)
                return
            video = batch[0].video
            if not video.finished:
                self._fail(video, f"inference failed: {short(err)}")
            return
        for chunk, partial in zip(batch, partials, strict=True):
            video = chunk.video
            if video.finished:
                continue
            video.partials[chunk.seq] = partial
            video.frames += chunk.frames
            self.frames += chunk.frames
            self._maybe_finalize(video)

    def _maybe_finalize(self, video: VideoState) -> None:
        if video.finished or video.chunks_total is None or len(video.partials) < video.chunks_total:
            return
        try:
            arrays = self.fs.finalize([video.partials[i] for i in range(video.chunks_total)])
            checked = {}
            for name, spec in self.outputs.items():
                if name not in arrays:
                    raise ValueError(f"finalize returned no {name!r}")
                array = spec.check(video.item.video_id, name, arrays[name])
                if array.dtype.kind == "f" and not np.isfinite(array).all():
                    raise ValueError(f"feature {name!r} holds NaN or infinite values")
                checked[name] = array
        except Exception as err:  # noqa: BLE001 - recorded as this video's failure
            self._fail(video, f"finalize failed: {short(err)}")
            return
        video.finished = True
        video.partials = {}
        shard = self.shards[video.shard]
        shard.results[video.item.video_id] = checked
        if video.node:
            shard.nodes[video.item.video_id] = video.node
        self.done_this_run += 1
        self.bar.update(1)
        self._video_settled(shard)

    def _retry(self, video: VideoState, reason: str) -> None:
        """Abandon this extraction of ``video`` (its late chunks are ignored) and queue it again, or fail it
        once it has been tried ``max_attempts`` times."""
        if video.finished:
            return
        if video.attempts + 1 >= self.max_attempts:
            self._fail(video, f"{reason} ({self.max_attempts} attempts)")
            return
        video.finished = True
        video.partials = {}
        log.warning("video %s: %s; extracting it again", video.item.video_id, reason)
        self.queue.appendleft(VideoState(video.shard, video.item, attempts=video.attempts + 1))

    def _fail(self, video: VideoState, reason: str) -> None:
        if video.finished:
            return
        video.finished = True
        video.partials = {}
        shard = self.shards[video.shard]
        shard.failures[video.item.video_id] = {
            "video_id": video.item.video_id,
            "path": video.item.path,
            "reason": reason,
        }
        self.failed_this_run += 1
        self.bar.update(1)
        self._video_settled(shard)

    def _video_settled(self, shard: ShardState) -> None:
        if self.first_settled is None:
            self.first_settled = time.monotonic()
        shard.remaining -= 1
        if shard.remaining == 0:
            self._write_shard(shard)

    def _write_shard(self, shard: ShardState) -> None:
        entry = self.manifest["shards"][shard.index]
        ids = [v for v in shard.planned if v in shard.results]
        failures = [shard.failures[v] for v in shard.planned if v in shard.failures]
        writer = ShardWriter(
            self.out_dir / SHARD_DIR / entry["name"],
            feature_set=self.manifest["feature_set"],
            outputs=self.outputs,
            provenance=self.manifest["provenance"],
            options=self.options_json,
            **shard_context(self.manifest, shard.index),
        )
        number = self.shards_written + 1
        hook = None
        if self.crash == ("in-shard", number):

            def hook(_tmp: Path) -> None:
                kill_self()

        writer.write(ids, [shard.results[v] for v in ids], failures, before_rename=hook)
        self.shards_written = number
        if self.crash == ("after-shard", number):
            kill_self()
        mark_complete(self.manifest, shard.index, ids, failures, shard_stamp(writer.path))
        if shard.nodes:  # which node decoded each video (informational; not part of the resume identity)
            entry["nodes"] = {v: shard.nodes[v] for v in ids if v in shard.nodes}
        save_manifest(self.out_dir, self.manifest)
        del self.shards[shard.index]

    def _refresh_bar(self) -> None:
        elapsed = time.monotonic() - self.t0
        if elapsed > 0 and self.progress_enabled:
            self.bar.set_postfix(
                failed=self.failed_this_run, frames_s=f"{self.frames / elapsed:.1f}", refresh=False
            )


def short(err: BaseException, limit: int = 300) -> str:
    text = f"{type(err).__name__}: {err}".strip().replace("\n", " ")
    return text if len(text) <= limit else text[: limit - 3] + "..."


def parse_crash_env() -> tuple[str, int] | None:
    value = os.environ.get(CRASH_ENV)
    if not value:
        return None
    kind, _, number = value.partition(":")
    if kind not in ("after-shard", "in-shard") or not number.isdigit():
        raise ValueError(f"{CRASH_ENV}={value!r}: expected 'after-shard:N' or 'in-shard:N'")
    return kind, int(number)


def kill_self() -> None:
    sys.stdout.flush()
    sys.stderr.flush()
    os.kill(os.getpid(), signal.SIGKILL)
