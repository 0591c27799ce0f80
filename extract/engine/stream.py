"""The decode stream both backends produce for the scheduler: header, chunk, header, chunk, ..., done|failed.

A decode never raises into the scheduler: any error while decoding one video becomes that video's
``failed`` header with the reason.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path

import numpy as np


def count_frames(chunk: Mapping[str, np.ndarray]) -> int:
    """Frames in a chunk: leading dims of each uint8 stack ((N, H, W, 3) -> N, (N, T, H, W, 3) -> N*T)."""
    frames = 0
    for value in chunk.values():
        is_image = isinstance(value, np.ndarray) and value.dtype == np.uint8 and value.ndim >= 4
        if is_image and value.shape[-1] == 3:
            frames += int(np.prod(value.shape[:-3]))
    return frames


def decode_items(fs, video_id: str, path: str, node: str | None = None) -> Iterator[dict]:
    """Run ``fs.decode`` and yield the stream the scheduler reads.

    For every chunk: a header ``{"kind": "chunk", "seq", "frames"}`` then the chunk itself; at the end
    ``{"kind": "done", "chunks": n}`` or, on any error, ``{"kind": "failed", "reason": ...}``; on a
    cluster the final header also names the ``node`` that decoded the video.
    """
    payload_next = False
    for item in _decode_stream(fs, video_id, path):
        if not payload_next and node is not None and item["kind"] != "chunk":
            item = {**item, "node": node}
        payload_next = not payload_next and item.get("kind") == "chunk"
        yield item


def _decode_stream(fs, video_id: str, path: str) -> Iterator[dict]:
    from extract.video import VideoDecodeError

    n = 0
    try:
        for chunk in fs.decode(video_id, Path(path)):
            yield {"kind": "chunk", "seq": n, "frames": count_frames(chunk)}
            yield chunk
            n += 1
    except VideoDecodeError as err:
        yield {"kind": "failed", "reason": err.reason}
        return
    except Exception as err:  # noqa: BLE001 - recorded as this video's failure; the run goes on
        yield {"kind": "failed", "reason": f"decoding raised {type(err).__name__}: {err}"}
        return
    if n == 0:
        yield {"kind": "failed", "reason": "the decoder produced no frames"}
    else:
        yield {"kind": "done", "chunks": n}
