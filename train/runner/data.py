"""The datasets of a run: the text prepared once (main process first), the splits (val held out of train
when the dataset has none), the questions dropped (missing features, segments after the video, answers
outside the vocabulary), the feature statistics, and moment retrieval's queries, edges and PCA."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from pipelines.deps import dependency_edges
from pipelines.text import prepare_moments, prepare_qa
from train.checkpoint import load_checkpoint
from train.config import TrainConfig
from train.data import (
    FeatureMismatchError,
    QACollate,
    QADataset,
    feature_statistics,
    find_missing_videos,
    seed_worker,
    segments_after_video,
)
from train.distributed import DistInfo, barrier
from train.moments import MomentConfig, MomentDataset, dependency_label_index, load_or_fit_pca
from train.runner.spec import RunSpec
from train.text_encoder import LoadedTextEncoder, encode_questions

log = logging.getLogger("train")


class RunData:
    """The datasets of one run and what was dropped."""

    def __init__(self) -> None:
        self.datasets: dict[str, QADataset] = {}
        self.dropped: dict[str, dict[str, int]] = {}
        self.feature_stats: dict[str, tuple[np.ndarray, np.ndarray]] | None = None
        self.feature_projection: dict[str, tuple[np.ndarray, np.ndarray]] | None = None  # moment PCA
        self.query_parse: dict[str, Any] | None = None  # moment: dependency parser and label ids


def recorded_stats(path: Path | None, ckpt: Mapping[str, Any] | None = None) -> dict[str, Any] | None:
    """The ``train.feature_norm=standardize`` statistics a checkpoint was trained with (None: none)."""
    if ckpt is None and path is not None:
        ckpt = load_checkpoint(path)
    stats = ((ckpt or {}).get("meta") or {}).get("feature_stats") or {}
    return {k: (v["mean"].numpy(), v["std"].numpy()) for k, v in stats.items()} or None


def build_qa_data(spec: RunSpec, adapter: Any, prepared: Any, reader: Any, entry: Any, task_type: str,
                text_encoder: LoadedTextEncoder | None = None, recorded_stats: dict | None = None) -> RunData:
    splits = prepared.splits
    feature_keys = tuple(getattr(entry, "feature_keys", ()) or ()) or None
    data = RunData()
    plan: dict[str, tuple[Any, np.ndarray]] = {}
    if "train" not in splits or "test" not in splits:
        raise FeatureMismatchError(f"{spec.dataset}: needs train and test splits, has {sorted(splits)}")
    train_split = splits["train"]
    n_train = len(train_split.qids)
    if "val" in splits:
        plan["train"] = (train_split, np.arange(n_train))
        plan["val"] = (splits["val"], np.arange(len(splits["val"].qids)))
    else:  # no official validation split: hold out a fixed-seed share of train
        perm = np.random.default_rng(0).permutation(n_train)
        n_val = max(1, int(round(spec.train.val_fraction * n_train)))
        plan["val"] = (train_split, np.sort(perm[:n_val]))
        plan["train"] = (train_split, np.sort(perm[n_val:]))
        log.info("%s has no val split: %d training questions held out for validation", spec.dataset, n_val)
    plan["test"] = (splits["test"], np.arange(len(splits["test"].qids)))

    stats = None
    if spec.train.feature_norm == "standardize" and recorded_stats is not None:
        stats = data.feature_stats = recorded_stats  # --resume / --eval-only: what the checkpoint saw
        log.info("features standardised per channel with the statistics the checkpoint records")
    elif spec.train.feature_norm == "standardize":
        train_split, train_rows = plan["train"]
        keys = feature_keys if feature_keys is not None else tuple(reader.outputs)
        keys = tuple(k for k in keys if not k.endswith("_times"))  # timestamps stay in seconds
        present = [train_split.video_ids[i] for i in train_rows if train_split.video_ids[i] in reader]
        stats = feature_statistics(reader, present, keys)
        log.info("features standardised per channel with the statistics of %d training videos",
                 len(set(present)))
        data.feature_stats = stats
    segments = question_segments(adapter, splits)
    texts = text_tokens(adapter, splits, text_encoder) if text_encoder is not None else {}
    for name, (split, rows) in plan.items():
        dropped: dict[str, int] = {}
        vids = [split.video_ids[i] for i in rows]
        missing = set(find_missing_videos(vids, reader))
        if missing:
            n_q = sum(v in missing for v in vids)
            if not spec.allow_missing_features:
                shown = ", ".join(sorted(missing)[:5])
                raise FeatureMismatchError(
                    f"{spec.features}: {len(missing)} video(s) of the {name} split ({n_q} questions) have no "
                    f"features, e.g. {shown}; extract them, or pass --allow-missing-features to drop those "
                    f"questions"
                )
            rows = np.array([i for i in rows if split.video_ids[i] not in missing], dtype=np.int64)
            dropped["missing_features"] = n_q
            log.warning("%s: dropped %d questions of %d videos without features", name, n_q, len(missing))
        source = next(k for k, v in splits.items() if v is split)
        rows = drop_segments_after_video(name, split, rows, segments.get(source), reader, dropped)
        if name == "train" and task_type == "open":
            answers = np.asarray(split.answers)
            oov = int((answers[rows] < 0).sum())
            if oov:
                rows = rows[answers[rows] >= 0]
                dropped["answer_out_of_vocabulary"] = oov
                log.info("train: dropped %d questions whose answer is outside the answer vocabulary", oov)
        if len(rows) == 0:
            raise FeatureMismatchError(f"the {name} split has no questions left to use")
        data.datasets[name] = QADataset(
            split, reader, feature_keys=feature_keys, indices=rows, feature_stats=stats,
            segments=segments.get(source), text_tokens=texts.get(source),
        )
        data.dropped[name] = dropped
    return data


def drop_segments_after_video(name: str, split: Any, rows: np.ndarray, segments: dict | None, reader: Any,
                               dropped: dict[str, int]) -> np.ndarray:
    """Drop (by name, counted) the questions whose segment (How2QA's ``ts``) starts after their video."""
    if not segments or "frame_times" not in reader.outputs:
        return rows
    asked = [(split.qids[i], split.video_ids[i], segments[split.qids[i]]) for i in rows
             if split.qids[i] in segments]
    outside = segments_after_video(asked, reader)
    if not outside:
        return rows
    gone = {qid for qid, *_ in outside}
    shown = "; ".join(f"{q} (video {v}: ts {a:g}-{b:g} s, the video ends by {e:.2f} s)"
                      for q, v, (a, b), e in outside[:3])
    log.warning("%s: dropped %d question(s) whose segment starts after the end of its video, e.g. %s", name,
                len(outside), shown)
    dropped["segment_after_video"] = len(outside)
    return np.array([i for i in rows if split.qids[i] not in gone], dtype=np.int64)


def prepare_qa_once(adapter: Any, prep_kwargs: dict[str, Any], dist: DistInfo) -> Any:
    """``prepare_qa`` on the main process first (it writes the cache), then on the others."""
    prepared = prepare_qa(adapter, **prep_kwargs) if dist.is_main else None
    barrier()
    return prepared if dist.is_main else prepare_qa(adapter, **prep_kwargs)


def question_segments(adapter: Any, splits: dict[str, Any]) -> dict[str, dict[str, tuple[float, float]]]:
    """Question id -> (start, end) seconds per split, for datasets whose records carry a segment (How2QA)."""
    out: dict[str, dict[str, tuple[float, float]]] = {}
    for name in splits:
        found = {r.qid: tuple(r.segment) for r in adapter.records(name) if getattr(r, "segment", None)}
        if found:
            out[name] = found
    return out


def text_tokens(adapter: Any, splits: dict[str, Any], text_encoder: LoadedTextEncoder
                 ) -> dict[str, dict[str, dict[str, np.ndarray]]]:
    """Question id -> the transformer question encoder's token arrays, per split (tokenized once); with
    the subtitles when the encoded splits carry them (``prepare_qa(subtitles=True)``)."""
    out = {}
    for name, split in splits.items():
        recs = adapter.records(name)
        subs = [r.subtitle for r in recs] if getattr(split, "subtitles", None) is not None else None
        encoded = encode_questions(text_encoder.tokenizer, [r.question for r in recs],
                                   [r.candidates for r in recs], text_encoder.max_len, subtitles=subs,
                                   subtitle_max_len=text_encoder.subtitle_max_len)
        out[name] = {r.qid: e for r, e in zip(recs, encoded, strict=True)}
    return out



def make_loader(ds: QADataset, *, batch_size: int, sampler: Any, collate: QACollate, cfg: TrainConfig,
            pin: bool, generator: torch.Generator | None = None) -> DataLoader:
    return DataLoader(
        ds,
        batch_size=batch_size,
        sampler=sampler,
        collate_fn=collate,
        num_workers=cfg.num_workers,
        pin_memory=pin,
        worker_init_fn=seed_worker,
        generator=generator,
        drop_last=False,
    )


def prepare_moments_data(spec: RunSpec, adapter: Any, reader: Any, dist: DistInfo, mc: MomentConfig
                          ) -> tuple[Any, RunData]:
    """Queries, dependency edges, the PCA projection and the three splits of a moment-retrieval run.

    ActivityNet Captions: train / val (val_1, model selection) / test (val_2); TACoS: train / val / test.
    Edges: the stored parses of the official ``*_gcn.json`` files when the adapter read those, else
    spaCy when installed, else the chain fallback (``pipelines.deps``).
    """
    cfg = spec.train
    cache = spec.out / "text_cache"

    def prepare() -> tuple[Any, Any]:
        prepared = prepare_moments(adapter, cache_dir=cache, glove=spec.glove,
                                   max_query_len=cfg.max_question_len)
        stored = adapter.stored_parses(cache) if hasattr(adapter, "stored_parses") else None
        return prepared, dependency_edges(adapter, cache_dir=cache, parsed=stored)

    if dist.is_main:
        prepared, parsed = prepare()
    barrier()
    if not dist.is_main:
        prepared, parsed = prepare()
    log.info("dependency edges: %s", parsed.parser)
    splits = prepared.splits
    if not {"train", "val", "test"} <= set(splits):
        raise FeatureMismatchError(f"{spec.dataset}: needs train, val and test splits, has {sorted(splits)}")
    labels = dependency_label_index(parsed.edges["train"], getattr(spec.model_config, "num_dep_labels", 40))
    data = RunData()
    data.query_parse = {"parser": parsed.parser, "labels": labels}  # carried by checkpoints
    rows: dict[str, np.ndarray] = {}
    for name in ("train", "val", "test"):
        split = splits[name]
        r = np.arange(len(split))
        missing = set(find_missing_videos(split.video_ids, reader))
        if missing:
            n_q = sum(v in missing for v in split.video_ids)
            if not spec.allow_missing_features:
                raise FeatureMismatchError(
                    f"{spec.features}: {len(missing)} video(s) of the {name} split ({n_q} queries) have no "
                    f"features, e.g. {', '.join(sorted(missing)[:5])}; extract them, or pass "
                    f"--allow-missing-features to drop those queries")
            r = np.array([i for i in r if split.video_ids[i] not in missing], dtype=np.int64)
            log.warning("%s: dropped %d queries of %d videos without features", name, n_q, len(missing))
        if len(r) == 0:
            raise FeatureMismatchError(f"the {name} split has no queries left to use")
        rows[name] = r
        data.dropped[name] = {"missing_features": len(split) - len(r)} if missing else {}
    train_vids = [splits["train"].video_ids[i] for i in rows["train"]]
    stats = None
    if cfg.feature_norm == "standardize":
        stats = feature_statistics(reader, train_vids, ("clips",))["clips"]
        data.feature_stats = {"clips": stats}  # carried by checkpoints (self_contained_meta)
    projection = None
    if mc.pca_dim is not None:
        if dist.is_main:
            projection = load_or_fit_pca(reader, train_vids, mc.pca_dim, cache_dir=spec.out / "feature_cache",
                                         stats=stats, whiten=mc.pca_whiten, center=mc.center_clips)
        barrier()
        if not dist.is_main:
            projection = load_or_fit_pca(reader, train_vids, mc.pca_dim, cache_dir=spec.out / "feature_cache",
                                         stats=stats, whiten=mc.pca_whiten, center=mc.center_clips)
        data.feature_projection = {"clips": (projection.mean, projection.components)}  # in checkpoints
    for name in ("train", "val", "test"):
        data.datasets[name] = MomentDataset(
            splits[name], parsed.edges[name], labels, reader, num_steps=mc.num_steps, resample=mc.resample,
            projection=projection, feature_stats=stats, center=mc.center_clips, indices=rows[name])
        data.datasets[name].num_steps = mc.num_steps
    return prepared, data


