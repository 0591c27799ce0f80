"""The in-process backend (``--local``, ``EngineConfig(backend="local")``): the scheduler unchanged, with
decoding and inference in the driver process (tests, debugging, and a run with nothing left to do)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from extract.engine.job import BackendError, FeatureSetSpec, load_models
from extract.engine.stream import decode_items


class LocalStream:
    def __init__(self, items: Iterator[dict]) -> None:
        self.items = items


class LocalFuture:
    def __init__(self, seq: int, payloads: list) -> None:
        self.seq = seq
        self.payloads = payloads


class LocalBackend:
    """In-process decode and inference; futures run when collected (oldest first)."""

    eager_dispatch = False

    def __init__(self, spec: FeatureSetSpec, fs) -> None:
        try:
            load_models(fs)
        except Exception as err:  # noqa: BLE001 - re-raised with context
            raise BackendError(f"cannot load the models of feature set {spec.name!r}: {err}") from err
        self.fs = fs
        self.num_workers = 1
        self.decode_slots = 1
        self._seq = 0
        import torch

        self.description = f"local (in-process decode and inference, {torch.get_num_threads()} torch threads)"

    def start_decode(self, video_id: str, path: str) -> LocalStream:
        return LocalStream(decode_items(self.fs, video_id, path))

    def next_item(self, stream: LocalStream) -> tuple[dict, Any]:
        header = next(stream.items)
        payload = next(stream.items) if header["kind"] == "chunk" else None
        return header, payload

    def submit_infer(self, worker: int, payloads: list) -> Any:
        self._seq += 1
        return LocalFuture(self._seq, payloads)

    def wait(self, streams: list, futures: list, timeout: float) -> tuple[list, list]:
        if futures:
            return [], [min(futures, key=lambda f: f.seq)]
        return list(streams[:1]), []

    def get_infer(self, future: Any) -> list[dict]:
        payloads, future.payloads = future.payloads, []
        return self.fs.infer(payloads)

    def release(self, payload: Any) -> None:
        return None

    def is_lost(self, err: BaseException) -> bool:
        return False

    def is_gone(self, err: BaseException) -> bool:
        return False

    def shutdown(self) -> None:
        return None
