"""Moment-retrieval datasets: ActivityNet Captions and TACoS.

ActivityNet Captions (Krishna et al., "Dense-Captioning Events in Videos", ICCV 2017):
``train.json``, ``val_1.json``, ``val_2.json`` under the root, each
``{video_id: {"duration": seconds, "timestamps": [[start, end], ...], "sentences": [...]}}`` with
ids like ``v_xxxxxxxxxxx``. Splits: ``train`` = train.json, ``val`` = val_1.json, ``test`` =
val_2.json (the usual practice of testing on val_2 with val_1 for model selection). Videos
``videos/<video_id>.<ext>``, any common video extension.

TACoS (Regneri et al., "Grounding Action Descriptions in Videos", TACL 2013), in the JSON
distributed with 2D-TAN and its successors: ``train.json``, ``val.json``, ``test.json``, each
``{"s13-d21.avi": {"num_frames": int, "fps": float, "timestamps": [[start_frame, end_frame], ...],
"sentences": [...]}}``. Frame timestamps become seconds as ``frame / fps`` and the duration is
``num_frames / fps``. The video id is the key without its extension (``s13-d21``); videos
``videos/<id>.<ext>``, any common video extension (``.avi`` reported when none exists).

For both, a timestamp with start > end is an error; the interval is then clipped to
``[0, duration]`` (a few ActivityNet Captions annotations run past the video's end). Query ids are
``<split>:<video_id>#<index within the video>`` (ActivityNet Captions val_1 and val_2 annotate the
same videos, so the split is part of the id).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pipelines.datasets.base import (
    DatasetAdapter,
    DatasetFormatError,
    MomentRecord,
    VideoDirectory,
    _Parsed,
    _Ref,
    nonempty_text,
    read_json,
    to_float,
)

__all__ = ["ActivityNetCaptionsAdapter", "TACoSAdapter"]


class _MomentAdapter(DatasetAdapter):
    kind = "moment"
    #: split name -> annotation file name
    files: dict[str, str] = {}
    expected = ""
    default_suffix = ".mp4"

    def splits(self) -> tuple[str, ...]:
        return tuple(self.files)

    def annotation_files(self) -> list[Path]:
        return [self.root / f for f in self.files.values()]

    def _video_id(self, key: str) -> str:
        return key

    def _times(self, item: dict, where: str) -> tuple[float, float]:
        """(seconds per timestamp unit, duration in seconds) of one video entry."""
        raise NotImplementedError

    def _parse(self) -> _Parsed:
        videos = VideoDirectory(self, "videos", self.default_suffix)
        records: dict[str, list[MomentRecord]] = {}
        refs: list[_Ref] = []
        for split, filename in self.files.items():
            path = self.root / filename
            data = read_json(path, self.expected)
            if not isinstance(data, dict):
                raise DatasetFormatError(f"{path}: top level is {type(data).__name__}, not an object keyed "
                                         f"by video; expected {self.expected}")
            out: list[MomentRecord] = []
            for key, item in data.items():
                where = f"{path}: record {key!r}"
                out.extend(self._video_moments(split, key, item, where))
                video_id = self._video_id(key)
                video_path = videos.resolve(video_id, f"{path} record {key!r}")
                refs.append(_Ref(video_id, video_path, path, f"record {key!r}"))
            records[split] = out
        return _Parsed(records=records, refs=refs)

    def _video_moments(self, split: str, key: str, item: Any, where: str) -> list[MomentRecord]:
        if not isinstance(item, dict) or "timestamps" not in item or "sentences" not in item:
            raise DatasetFormatError(f"{where}: expected an object with 'timestamps' and 'sentences'; "
                                     f"expected {self.expected}")
        unit, duration = self._times(item, where)
        stamps, sentences = item["timestamps"], item["sentences"]
        if not isinstance(stamps, list) or not isinstance(sentences, list) or len(stamps) != len(sentences):
            raise DatasetFormatError(f"{where}: 'timestamps' and 'sentences' must be lists of equal length; "
                                     f"expected {self.expected}")
        video_id = self._video_id(key)
        out = []
        for i, (stamp, sentence) in enumerate(zip(stamps, sentences, strict=True)):
            at = f"{where} timestamp {i}"
            if not isinstance(stamp, list | tuple) or len(stamp) != 2:
                raise DatasetFormatError(f"{at}: {stamp!r} is not [start, end]; expected {self.expected}")
            start, end = (to_float(v, "timestamps", at, self.expected) * unit for v in stamp)
            if start > end:
                raise DatasetFormatError(f"{at}: start {stamp[0]} > end {stamp[1]}; expected {self.expected}")
            start, end = min(max(start, 0.0), duration), min(max(end, 0.0), duration)
            query = nonempty_text(sentence, "sentences", at, self.expected)
            out.append(MomentRecord(f"{split}:{video_id}#{i}", video_id, query, start, end, duration))
        return out


class ActivityNetCaptionsAdapter(_MomentAdapter):
    """ActivityNet Captions: train / val (= val_1) / test (= val_2); videos ``videos/<id>.*``."""

    name = "activitynet-captions"
    files = {"train": "train.json", "val": "val_1.json", "test": "val_2.json"}
    expected = ('{video_id: {"duration": seconds, "timestamps": [[start, end], ...], '
                '"sentences": [str, ...]}}')

    def _times(self, item: dict, where: str) -> tuple[float, float]:
        if "duration" not in item:
            raise DatasetFormatError(f"{where}: missing field 'duration'; expected {self.expected}")
        duration = to_float(item["duration"], "duration", where, self.expected)
        if duration <= 0:
            raise DatasetFormatError(f"{where}: duration {duration} <= 0; expected {self.expected}")
        return 1.0, duration


class TACoSAdapter(_MomentAdapter):
    """TACoS (2D-TAN JSON): frame timestamps converted to seconds with ``fps``; videos ``videos/<id>.*``."""

    name = "tacos"
    files = {"train": "train.json", "val": "val.json", "test": "test.json"}
    expected = ('{"<video>.avi": {"num_frames": int, "fps": float, "timestamps": [[start_frame, end_frame], '
                '...], "sentences": [str, ...]}}')
    default_suffix = ".avi"

    def _video_id(self, key: str) -> str:
        return key[: -len(Path(key).suffix)] if Path(key).suffix else key

    def _times(self, item: dict, where: str) -> tuple[float, float]:
        for field in ("num_frames", "fps"):
            if field not in item:
                raise DatasetFormatError(f"{where}: missing field {field!r}; expected {self.expected}")
        fps = to_float(item["fps"], "fps", where, self.expected)
        num_frames = to_float(item["num_frames"], "num_frames", where, self.expected)
        if fps <= 0 or num_frames <= 0:
            raise DatasetFormatError(f"{where}: fps {fps} and num_frames {num_frames} must be > 0; "
                                     f"expected {self.expected}")
        return 1.0 / fps, num_frames / fps
