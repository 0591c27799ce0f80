"""Moment retrieval (CMIN): a query's moment in seconds. Its settings (the ``moment:`` section,
``train.moments.MomentConfig``), queries with dependency edges, datasets (``train.moments.MomentDataset``:
clips standardised, projected by the training split's PCA, resampled), batches, loss, evaluation
protocol, baselines (a random window, the best prior) and prediction files (top-5 moments)."""

from __future__ import annotations

import csv
import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from pipelines.atomic import atomic_path
from pipelines.deps import dependency_edges
from pipelines.text import prepare_moments
from train.checkpoint import load_checkpoint
from train.config import TrainConfig, build_config, config_to_dict
from train.data import FeatureMismatchError, feature_statistics, find_missing_videos
from train.distributed import DistInfo, barrier
from train.losses import (
    MOMENT_PROTOCOLS,
    PredictionRecord,
    compute_losses,
    moment_metrics,
    moment_records,
    nms_top_k,
)
from train.moments import (
    MomentCollate,
    MomentConfig,
    MomentDataset,
    best_prior_moments,
    checkpoint_configs,
    dependency_label_index,
    load_or_fit_pca,
    random_moments,
    upgrade_sections,
)
from train.tasks.base import RunData, TaskKind

if TYPE_CHECKING:
    from train.runner.spec import RunSpec

__all__ = ["MOMENT", "MomentTask", "prepare_moments_data"]

log = logging.getLogger("train")


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


def moment_settings(spec: RunSpec) -> MomentConfig:
    """The run's moment settings: the evaluated checkpoint's (``--eval-only``), else the spec's."""
    if spec.eval_only and spec.checkpoint is not None:
        meta = load_checkpoint(spec.checkpoint).get("meta", {})
        return build_config(MomentConfig, checkpoint_configs(meta, source=str(spec.checkpoint))[1],
                            section="moment")
    return spec.moment if spec.moment is not None else MomentConfig()


def moment_loss_fn(moment: MomentConfig):
    """The moment loss with the run's label rule, regression weight, normalisation and ground truth."""
    settings = moment.loss_settings()
    return lambda outputs, batch: compute_losses("moment", outputs, batch, **settings)


def protocol_record(cfg: TrainConfig) -> dict[str, Any]:
    """Which protocol produced a moment run's metrics (``metrics.json``: ``moment_protocol``)."""
    return {"name": cfg.moment_iou, "description": MOMENT_PROTOCOLS[cfg.moment_iou],
            "listed_nms": cfg.moment_nms}


def moment_baselines(data: RunData, cfg: TrainConfig) -> dict[str, float]:
    """``random_window/<metric>`` (5 uniform random windows, seed 0) and ``best_prior/<metric>`` (the
    training split's 5 most frequent normalised moments), evaluated like the model: the same protocol
    (``train.moment_iou``; the listed moments after NMS at ``train.moment_nms``, the official protocol's
    R@5 re-ranking the 5 by its own NMS)."""
    tr, te = data.datasets["train"], data.datasets["test"]
    rows, s = te.indices, te.split
    dur = np.asarray(s.duration_s, dtype=np.float64)[rows]
    gt = torch.as_tensor(np.stack([np.asarray(s.start_s)[rows], np.asarray(s.end_s)[rows]], 1),
                         dtype=torch.float64)
    qids, vids = [s.qids[i] for i in rows], [s.video_ids[i] for i in rows]
    t = tr.split
    prior, freq = best_prior_moments(np.asarray(t.start_s)[tr.indices], np.asarray(t.end_s)[tr.indices],
                                     np.asarray(t.duration_s)[tr.indices])
    keep = nms_top_k(torch.as_tensor(prior), torch.as_tensor(freq), threshold=cfg.moment_nms).numpy()
    steps = getattr(te, "num_steps", 200)
    out: dict[str, float] = {}
    for name, moments, scores, listed in (
        ("random_window", random_moments(dur), [np.linspace(1, 0.5, 5)] * len(rows), None),
        ("best_prior", [prior * d for d in dur], [freq] * len(rows), keep),
    ):
        moments = [torch.as_tensor(m, dtype=torch.float64) for m in moments]
        scores = [torch.as_tensor(c, dtype=torch.float64) for c in scores]
        cands = None
        if cfg.moment_iou == "official":  # R@5 ranks all 5 with its own NMS; the steps of each moment
            cands = [(m * steps / d - torch.tensor([0.0, 1.0], dtype=torch.float64), c)
                     for m, c, d in zip(moments, scores, dur, strict=True)]
        if listed is not None:
            moments, scores = [m[listed] for m in moments], [c[listed] for c in scores]
        recs = moment_records(qids, vids, moments, scores, gt, torch.as_tensor(dur), iou=cfg.moment_iou,
                              num_steps=steps, candidates=cands)
        for k, v in moment_metrics(recs).items():
            if k != "num_questions":
                out[f"{name}/{k}"] = v
    return out


def write_moment_predictions(out: Path, split: str, records: Sequence[PredictionRecord]) -> None:
    """Per query: its top-5 moments ``[start_s, end_s, score]`` (best first), the ground truth, the IoU of
    each moment and of the top one."""
    rows = [{"qid": r.qid, "video_id": r.video_id, "prediction": r.prediction, "answer": r.answer,
             "ious": [round(v, 4) for v in (r.ious or ())], "iou": round(r.score, 4)} for r in records]
    with atomic_path(out / f"predictions_{split}.jsonl") as tmp:
        tmp.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    header = ["qid", "video_id", "gt_start", "gt_end", "iou"]
    for k in range(1, 6):
        header += [f"start_{k}", f"end_{k}", f"score_{k}", f"iou_{k}"]
    with atomic_path(out / f"predictions_{split}.csv") as tmp:
        with open(tmp, "w", encoding="utf-8", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(header)
            for r in rows:
                line = [r["qid"], r["video_id"], *r["answer"], r["iou"]]
                for k in range(5):
                    pred = r["prediction"][k] if k < len(r["prediction"]) else ["", "", ""]
                    line += [*pred, r["ious"][k] if k < len(r["ious"]) else ""]
                w.writerow(line)

class MomentTask(TaskKind):
    """Moment retrieval: the kind of the ``activitynet-captions`` and ``tacos`` adapters."""

    name = "moment"
    selection = ("R@1,IoU=0.5", "max")

    def settings(self, spec: RunSpec) -> MomentConfig:
        return moment_settings(spec)

    def config_sections(self, settings: MomentConfig | None) -> dict[str, Any]:
        return {"moment": config_to_dict(settings or MomentConfig())}

    def upgrade_saved_config(self, saved: dict[str, Any], *, source: str) -> dict[str, Any]:
        return upgrade_sections(saved, source=source)

    def checkpoint_meta(self, settings: MomentConfig) -> dict[str, Any]:
        # the clips' view and the loss (vqa-answer and --eval-only read it)
        return {"moment_config": json.dumps(config_to_dict(settings), sort_keys=True)}

    def prepare_text(self, spec: RunSpec, adapter: Any, reader: Any, dist: DistInfo, settings: MomentConfig,
                     prep_kwargs: dict[str, Any]) -> tuple[Any, RunData | None]:
        return prepare_moments_data(spec, adapter, reader, dist, settings)  # the datasets too

    def vocabularies(self, prepared: Any) -> tuple[list[str], list[str] | None]:
        return list(prepared.query_vocab), None

    def build_datasets(self, spec: RunSpec, adapter: Any, prepared: Any, reader: Any, entry: Any, *,
                       data: RunData | None, text_encoder: Any, recorded_stats: dict | None) -> RunData:
        return data  # built with the queries' parses by prepare_text

    def collate(self, reader: Any) -> MomentCollate:
        return MomentCollate()

    def loss_fn(self, settings: MomentConfig):
        return moment_loss_fn(settings)

    def eval_options(self, cfg: TrainConfig) -> dict[str, Any]:
        return {"nms_threshold": cfg.moment_nms, "iou": cfg.moment_iou}

    def result_extras(self, cfg: TrainConfig) -> dict[str, Any]:
        return {"moment_protocol": protocol_record(cfg)}

    def baselines(self, data: RunData, cfg: TrainConfig) -> dict[str, float]:
        return moment_baselines(data, cfg)

    def write_predictions(self, out: Path, split: str, records: Sequence[PredictionRecord]) -> None:
        write_moment_predictions(out, split, records)


MOMENT = MomentTask()
