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

For both, a timestamp with start > end is an error naming the file and record; an interval
reaching outside ``[0, duration]`` is clipped to it (a few ActivityNet Captions annotations run past
the video's end) and every clipped row is counted in a warning naming the file. An interval with
nothing inside ``[0, duration]`` (e.g. [40, 50] s on a 33.6 s video, or negative) would become a
zero-length moment: such rows are dropped, counted and named (the first few) in a warning. Query ids are
``<split>:<video_id>#<index within the video>`` (ActivityNet Captions val_1 and val_2 annotate the
same videos, so the split is part of the id).

The official CMIN annotation files are read too, when the original ones are absent: ActivityNet
``{train,val,test}_data_gcn.json`` and TACoS ``TACOS_{train,val,test}_gcn.json`` (CMIN's
``data/activity`` and ``data/tacos``). Each is a JSON list of rows ``[video, duration_s, [start_s,
end_s], sentence, words, node_positions, adjacency]``: the query is its stored ``words`` joined by
spaces, and the stored parse becomes the dependency edges (:meth:`stored_parses`):
``adjacency[i][j] = r`` with ``r >= 2`` is an edge from head j to dependent i with label ``rel<r>``
(``r = 1`` marks the diagonal). TACoS rows name the video with its extension (``s13-d21.avi``).
"""

from __future__ import annotations

import logging
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

log = logging.getLogger(__name__)
_GCN_EXPECTED = ("a JSON list of [video, duration_s, [start_s, end_s], sentence, words, node_positions, "
                 "adjacency] rows (CMIN's *_gcn.json)")


class _MomentAdapter(DatasetAdapter):
    kind = "moment"
    #: split name -> annotation file name
    files: dict[str, str] = {}
    expected = ""
    default_suffix = ".mp4"

    #: split name -> the official CMIN file (read when the original annotations are absent)
    gcn_files: dict[str, str] = {}

    @property
    def task_type(self) -> str:
        return "moment"

    @property
    def uses_gcn_files(self) -> bool:
        """True when the root holds CMIN's ``*_gcn.json`` files and not the original annotations."""
        originals = any((self.root / f).exists() for f in self.files.values())
        return not originals and all((self.root / f).is_file() for f in self.gcn_files.values())

    def _files(self) -> dict[str, str]:
        return self.gcn_files if self.uses_gcn_files else self.files

    def splits(self) -> tuple[str, ...]:
        return tuple(self.files)

    def annotation_files(self) -> list[Path]:
        return [self.root / f for f in self._files().values()]

    def _video_id(self, key: str) -> str:
        return key

    def _times(self, item: dict, where: str) -> tuple[float, float]:
        """(seconds per timestamp unit, duration in seconds) of one video entry."""
        raise NotImplementedError

    def _parse(self) -> _Parsed:
        if self.uses_gcn_files:
            return self._parse_gcn()
        videos = VideoDirectory(self, "videos", self.default_suffix)
        records: dict[str, list[MomentRecord]] = {}
        refs: list[_Ref] = []
        for split, filename in self.files.items():
            path = self.root / filename
            self._clipped = 0
            data = read_json(path, self.expected)
            if not isinstance(data, dict):
                raise DatasetFormatError(f"{path}: top level is {type(data).__name__}, not an object keyed "
                                         f"by video; expected {self.expected}")
            self._outside = []
            out: list[MomentRecord] = []
            for key, item in data.items():
                where = f"{path}: record {key!r}"
                out.extend(self._video_moments(split, key, item, where))
                video_id = self._video_id(key)
                find = videos.lookup(video_id, f"{path} record {key!r}")  # the id checked now, the path later
                refs.append(_Ref(video_id, find, path, f"record {key!r}"))
            records[split] = out
            self._warn_clipped(path)
        return _Parsed(records=records, refs=refs)

    def _warn_clipped(self, path: Path) -> None:
        if self._clipped:
            log.warning("%s: %d moment(s) reach outside [0, duration]; clipped to the video", path,
                        self._clipped)
        if self._outside:
            log.warning("%s: dropped %d moment(s) wholly outside their video, e.g. %s", path,
                        len(self._outside), "; ".join(self._outside[:3]))

    def _moment(self, split: str, video_id: str, i: int, stamp: Any, unit: float, duration: float,
                sentence: Any, at: str, expected: str) -> MomentRecord | None:
        """The record of one timestamp, clipped to the video; None (counted) when none of it lies inside."""
        if not isinstance(stamp, list | tuple) or len(stamp) != 2:
            raise DatasetFormatError(f"{at}: {stamp!r} is not [start, end]; expected {expected}")
        start, end = (to_float(v, "timestamps", at, expected) * unit for v in stamp)
        if start > end:
            raise DatasetFormatError(f"{at}: start {stamp[0]} > end {stamp[1]}; fix or drop the row "
                                     f"(expected {expected})")
        query = nonempty_text(sentence, "sentences", at, expected)
        inside = (min(max(start, 0.0), duration), min(max(end, 0.0), duration))
        if start < 0 or end > duration:
            if inside[1] <= inside[0]:  # nothing of it inside the video: a zero-length moment otherwise
                self._outside.append(f"{at}: [{start:g}, {end:g}] s on a {duration:g} s video")
                return None
            self._clipped += 1
        return MomentRecord(f"{split}:{video_id}#{i}", video_id, query, *inside, duration)

    # ------------------------------------------------------------------ CMIN's *_gcn.json files
    def _gcn_rows(self, split: str) -> list[tuple[str, float, list, str, list, list]]:
        """The checked rows of one official file: (video id, duration, stamp, query, words, adjacency)."""
        path = self.root / self.gcn_files[split]
        data = read_json(path, _GCN_EXPECTED)
        if not isinstance(data, list):
            raise DatasetFormatError(f"{path}: top level is {type(data).__name__}; expected {_GCN_EXPECTED}")
        rows = []
        for n, row in enumerate(data):
            at = f"{path}: row {n}"
            if not isinstance(row, list) or len(row) != 7 or not isinstance(row[4], list):
                raise DatasetFormatError(f"{at}: not a 7-field row; expected {_GCN_EXPECTED}")
            vid, duration, stamp, sentence, words, _, adj = row
            words = [str(w) for w in words]
            ok = isinstance(adj, list) and len(adj) == len(words) and all(
                isinstance(r, list) and len(r) == len(words) for r in adj)
            if not ok or not words:
                raise DatasetFormatError(f"{at}: 'words' must be non-empty and 'adjacency' a {len(words)} x "
                                         f"{len(words)} matrix; expected {_GCN_EXPECTED}")
            duration = to_float(duration, "duration", at, _GCN_EXPECTED)
            if duration <= 0:
                raise DatasetFormatError(f"{at}: duration {duration} <= 0; expected {_GCN_EXPECTED}")
            rows.append((self._video_id(str(vid)), duration, stamp, " ".join(words), words, adj))
        return rows

    def _parse_gcn(self) -> _Parsed:
        videos = VideoDirectory(self, "videos", self.default_suffix)
        records: dict[str, list[MomentRecord]] = {}
        refs: list[_Ref] = []
        seen: set[str] = set()
        for split in self.files:
            path = self.root / self.gcn_files[split]
            self._clipped, self._outside = 0, []
            counter: dict[str, int] = {}
            out = []
            for n, (vid, duration, stamp, query, _, _) in enumerate(self._gcn_rows(split)):
                i = counter[vid] = counter.get(vid, -1) + 1
                record = self._moment(split, vid, i, stamp, 1.0, duration, query, f"{path}: row {n}",
                                      _GCN_EXPECTED)
                if record is not None:
                    out.append(record)
                if vid not in seen:
                    seen.add(vid)
                    refs.append(_Ref(vid, videos.lookup(vid, f"{path} row {n}"), path, f"row {n}"))
            records[split] = out
            self._warn_clipped(path)
        return _Parsed(records=records, refs=refs)

    def stored_parses(self, cache_dir: str | Path) -> Path | None:
        """The official files' parses as a ``pipelines.deps`` pre-parsed file (written once into
        ``cache_dir``), or None when the original annotations are read (they carry no parse)."""
        if not self.uses_gcn_files:
            return None
        from pipelines.text import tokenize

        edges: dict[str, list[list]] = {}
        for split in self.files:
            counter: dict[str, int] = {}
            path = self.root / self.gcn_files[split]
            for n, (vid, _, _, query, words, adj) in enumerate(self._gcn_rows(split)):
                i = counter[vid] = counter.get(vid, -1) + 1
                if tokenize(query) != [w.lower() for w in words]:
                    raise DatasetFormatError(f"{path}: row {n}: the stored words {words} do not tokenize to "
                                             f"themselves, so the stored parse cannot be aligned")
                edges[f"{split}:{vid}#{i}"] = [[j, k, f"rel{r}"] for k, line in enumerate(adj)
                                               for j, r in enumerate(line) if isinstance(r, int) and r >= 2]
        target = Path(cache_dir) / f"{self.name}-stored-parses-{self.fingerprint()[:20]}.json"
        if not target.is_file():
            from pipelines.atomic import write_json_atomic

            write_json_atomic(target, edges)
        return target

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
        records = [self._moment(split, video_id, i, stamp, unit, duration, sentence, f"{where} timestamp {i}",
                                self.expected)
                   for i, (stamp, sentence) in enumerate(zip(stamps, sentences, strict=True))]
        return [r for r in records if r is not None]


class ActivityNetCaptionsAdapter(_MomentAdapter):
    """ActivityNet Captions: train / val (= val_1) / test (= val_2); videos ``videos/<id>.*``."""

    name = "activitynet-captions"
    files = {"train": "train.json", "val": "val_1.json", "test": "val_2.json"}
    gcn_files = {"train": "train_data_gcn.json", "val": "val_data_gcn.json", "test": "test_data_gcn.json"}
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
    gcn_files = {"train": "TACOS_train_gcn.json", "val": "TACOS_val_gcn.json", "test": "TACOS_test_gcn.json"}
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
