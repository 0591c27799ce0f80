"""Moment retrieval (CMIN): a query's moment in seconds. Its settings (the ``moment:`` section,
``train.moments.MomentConfig``), queries with dependency edges, datasets (``train.moments.MomentDataset``:
clips standardised, projected by the training split's PCA, resampled), batches, loss, predictions and
metrics (``moment_losses.py``), evaluation protocol, baselines (a random window, the best prior),
prediction files (top-5 moments), and ``vqa-answer``'s items of new queries (``train.moments.moment_item``,
as ``MomentDataset``'s) and their moments."""

from __future__ import annotations

import csv
import json
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor

from pipelines.atomic import atomic_path
from pipelines.deps import SpacyUnavailable, dependency_edges, new_query_parser
from pipelines.text import encode_tokens, prepare_moments, tokenize
from train.checkpoint import load_checkpoint
from train.config import TrainConfig, build_config, config_to_dict
from train.data import FeatureMismatchError, drop_missing_videos, feature_statistics
from train.distributed import DistInfo, barrier
from train.losses import PredictionRecord
from train.moments import (
    MomentCollate,
    MomentConfig,
    MomentDataset,
    Projection,
    best_prior_moments,
    checkpoint_configs,
    dependency_label_index,
    load_or_fit_pca,
    model_view,
    moment_item,
    random_moments,
    upgrade_sections,
)
from train.tasks.base import ItemError, RunData, TaskKind, recorded_feature_stats, short_float
from train.tasks.moment_losses import (
    MOMENT_PROTOCOLS,
    moment_loss,
    moment_metrics,
    moment_predictions,
    moment_records,
    nms_top_k,
    predict_moments,
)

if TYPE_CHECKING:
    from train.runner.spec import RunSpec

__all__ = ["MOMENT", "MomentTask", "MomentView", "checkpoint_moment_config", "prepare_moments_data"]

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
        r, n_missing = drop_missing_videos(name, split.video_ids, np.arange(len(split)), reader,
                                           unit="queries", features=spec.features,
                                           allow=spec.allow_missing_features)
        if len(r) == 0:
            raise FeatureMismatchError(f"the {name} split has no queries left to use")
        rows[name] = r
        data.dropped[name] = {"missing_features": n_missing} if n_missing else {}
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


def checkpoint_moment_config(meta: Mapping[str, Any], *, source: str) -> MomentConfig:
    """The moment settings a checkpoint was trained with: its ``moment_config``, or the keys older
    checkpoints kept in ``model_config`` (``--eval-only`` and ``vqa-answer`` alike)."""
    return build_config(MomentConfig, checkpoint_configs(meta, source=source)[1], section="moment")


def moment_settings(spec: RunSpec) -> MomentConfig:
    """The run's moment settings: the evaluated checkpoint's (``--eval-only``), else the spec's."""
    if spec.eval_only and spec.checkpoint is not None:
        return checkpoint_moment_config(load_checkpoint(spec.checkpoint).get("meta", {}),
                                        source=str(spec.checkpoint))
    return spec.moment if spec.moment is not None else MomentConfig()


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

#: a moment counts as found (a report's "correct" sample) at this IoU of the top moment with the true one
MOMENT_HIT_IOU = 0.5


class MomentTask(TaskKind):
    """Moment retrieval: the kind of the ``activitynet-captions`` and ``tacos`` adapters."""

    name = "moment"
    output_key = "window_scores"
    selection = ("R@1,IoU=0.5", "max")
    text_key, text_short, answers_title = "query", "query", "moments"
    required_meta = ("query_parse",)  # the query parser and its label ids
    reads_duration = True
    report_metrics = ("R@1,IoU=0.5", "R@5,IoU=0.5", "mIoU")
    report_all_metrics = True
    per_type_score = None
    sample_titles = (f"Found test moments (top moment IoU \u2265 {MOMENT_HIT_IOU})",
                     f"Missed test moments (IoU < {MOMENT_HIT_IOU})")
    prediction_label = " (top moments, score)"

    def summary_metrics(self, m: Mapping[str, Any]) -> list[tuple[str, str, dict[str, float]]]:
        """R@1 and R@5 at IoU 0.5 and mIoU, each labelled with the protocol and beside the same metric of
        the baselines."""
        protocol = (m.get("moment_protocol") or {}).get("name", "protocol not recorded")
        base = m.get("baselines_test", {})
        return [(k, f"{k} [{protocol}]", {b: v for b, v in base.items() if b.endswith("/" + k)})
                for k in self.report_metrics]

    def summary_baselines(self, m: Mapping[str, Any]) -> dict[str, float]:
        return {k: v for k, v in m["baselines_test"].items() if k.endswith((m["selection_metric"], "mIoU"))}

    def prediction_hit(self, p: Mapping[str, Any]) -> bool:
        return p["iou"] >= MOMENT_HIT_IOU

    def describe_sample(self, p: Mapping[str, Any], record: Any) -> tuple[str, str]:
        pred = ", ".join(f"{a:.2f}-{b:.2f} s ({c:.3f})" for a, b, c in p["prediction"])
        truth = p["answer"]
        return pred, f"{truth[0]:.2f}-{truth[1]:.2f} s; IoU of the top moment {p['iou']:.3f}"

    def ask(self, answerer: Any, path: Path, record: Any) -> tuple[Any, tuple[float, float] | None]:
        return answerer.answer(path, record.query), (record.start_s, record.end_s)

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
        """The moment loss with the run's label rule, regression weight, normalisation and ground truth."""
        options = settings.loss_settings()
        return lambda outputs, batch: self.losses(outputs, batch, **options)

    def losses(self, outputs: Mapping[str, Tensor], batch: Mapping[str, Any], *, margin: float = 1.0,
               hinge_reduction: str = "sum", **settings: Any) -> dict[str, Tensor]:
        """``{"loss_align", "loss_reg"}`` (:func:`~train.tasks.moment_losses.moment_loss`; ``settings``:
        ``label_min_ratio``, ``reg_weight``, ``align_norm``, ``gt_rule``)."""
        self.output(outputs)
        return moment_loss(outputs, batch, **settings)

    def predict(self, outputs: Mapping[str, Tensor], batch: Mapping[str, Any], *,
                answer_vocab: Sequence[str] | None = None, **options: Any) -> list[PredictionRecord]:
        """Each query's top-5 moments (``options``: ``nms_threshold`` and ``iou``, the protocol)."""
        self.output(outputs)
        return predict_moments(outputs, batch, **options)

    def metrics(self, records: Sequence[PredictionRecord]) -> dict[str, float]:
        return moment_metrics(records)

    def eval_options(self, cfg: TrainConfig) -> dict[str, Any]:
        return {"nms_threshold": cfg.moment_nms, "iou": cfg.moment_iou}

    def result_extras(self, cfg: TrainConfig) -> dict[str, Any]:
        return {"moment_protocol": protocol_record(cfg)}

    def baselines(self, data: RunData, cfg: TrainConfig) -> dict[str, float]:
        return moment_baselines(data, cfg)

    def write_predictions(self, out: Path, split: str, records: Sequence[PredictionRecord]) -> None:
        write_moment_predictions(out, split, records)

    # -- vqa-answer ---------------------------------------------------------------------------------------

    def answer_view(self, meta: Mapping[str, Any], *, source: str, feature_keys: Sequence[str],
                    text_encoder: Any = None) -> MomentView:
        """The run's clips' view (standardisation, PCA, resampling), decoding (NMS) and query parser."""
        view = checkpoint_moment_config(meta, source=source)
        parse = meta["query_parse"]
        try:
            parse_query, note = new_query_parser(str(parse["parser"]))
        except SpacyUnavailable as exc:
            raise ItemError(f"{source}: the run's queries were parsed with {parse['parser']}, needed for new "
                            f"queries too: {exc}") from None
        nms = float(json.loads(meta["train_config"]).get("moment_nms", 0.5))
        return MomentView(
            index={tok: i for i, tok in enumerate(meta["question_vocab"])},
            max_len=meta.get("max_question_len"), stats=recorded_feature_stats(meta).get("clips"),
            projection=Projection.from_meta(meta), num_steps=view.num_steps, resample=view.resample,
            center=view.center_clips, nms_threshold=nms, parse_query=parse_query, note=note,
            dep_labels={str(k): int(v) for k, v in parse["labels"].items()})

    def new_item(self, view: MomentView, features: Mapping[str, Any], video_id: str, text: str, *,
                 candidates: Sequence[str] | None = None, segment: tuple[float, float] | None = None,
                 subtitle: str | None = None, duration: float | None = None) -> dict[str, Any]:
        """A ``MomentDataset`` item (``train.moments.moment_item``) of a new query: its parse by the run's
        parser, the clips through the run's view (``train.moments.model_view``)."""
        if subtitle is not None:
            raise ItemError("this model was not trained with subtitles; drop the subtitle")
        if candidates or segment:
            raise ItemError("this is a moment-retrieval model: it takes a query, no candidates/segment")
        tokens = tokenize(text)
        ids, lengths = encode_tokens([tokens], view.index, view.max_len)
        clips = model_view(features["clips"], num_steps=view.num_steps, resample=view.resample,
                           projection=view.projection, feature_stats=view.stats, center=view.center)
        return moment_item(qid="q", video_id=video_id, query=ids[0], query_len=int(lengths[0]),
                           edges=view.parse_query(tokens), labels=view.dep_labels, clips=clips,
                           duration=duration)

    def answer_collate(self, ragged_keys: Sequence[str]) -> MomentCollate:
        return MomentCollate()

    def decode_answer(self, outputs: Mapping[str, Tensor], batch: Mapping[str, Any], view: MomentView, *,
                      candidates: Sequence[str] | None, top_k: int) -> dict[str, Any]:
        """The top ``top_k`` moments after NMS at the run's threshold, in seconds, with their scores."""
        (moments, scores), = moment_predictions(outputs, durations=batch["duration"],
                                                nms_threshold=view.nms_threshold, top_k=top_k)
        return {"moments": [(float(a), float(b), float(c))
                            for (a, b), c in zip(moments.tolist(), scores.tolist(), strict=True)]}

    def answer_prediction(self, answer: Any) -> Any:
        return [round(float(answer.moments[0][0]), 3), round(float(answer.moments[0][1]), 3)]

    def answer_json(self, answer: Any) -> dict[str, Any]:
        return {"moments": [{"start": short_float(a), "end": short_float(b), "score": short_float(s)}
                            for a, b, s in answer.moments]}

    def answer_table(self, answer: Any) -> list[str]:
        lines = self.header(answer)
        lines[0] += f"  ({answer.duration:.2f} s)" if answer.duration is not None else ""
        ranked = enumerate(answer.moments, 1)
        return [*lines, "  rank  start (s)  end (s)  score",
                *(f"  {r:>4}  {a:>9.2f}  {b:>7.2f}  {s:.4f}" for r, (a, b, s) in ranked)]

    def answer_lines(self, answer: Any, ground_truth: tuple[float, float] | None = None
                     ) -> list[tuple[str, float | None]]:
        """Each moment (with its IoU with the ground truth, when given), then the ground truth."""
        lines = []
        for a, b, s in answer.moments:
            iou = f"  IoU {interval_iou((a, b), ground_truth):.2f}" if ground_truth is not None else ""
            lines.append((f"{a:.2f}-{b:.2f} s  score {s:.3f}{iou}", None))
        if ground_truth is not None:
            lines.append((f"true moment {ground_truth[0]:.2f}-{ground_truth[1]:.2f} s", None))
        return lines



@dataclass
class MomentView:
    """How a checkpoint reads a new query and its video's clips (:meth:`MomentTask.answer_view`)."""

    index: dict[str, int]  # query vocabulary: token -> id
    max_len: int | None
    stats: tuple[np.ndarray, np.ndarray] | None  # the clips' standardisation
    projection: Projection | None
    num_steps: int
    resample: str
    center: bool
    nms_threshold: float
    dep_labels: dict[str, int]
    parse_query: Callable[[list[str]], Any]
    note: str | None  # the query parser falls back (pipelines.deps)


def interval_iou(a: tuple[float, float], b: tuple[float, float]) -> float:
    """Plain IoU of two intervals in seconds (0 when disjoint)."""
    inter = max(0.0, min(a[1], b[1]) - max(a[0], b[0]))
    union = max(a[1], b[1]) - min(a[0], b[0])
    return inter / union if union > 0 else 0.0


MOMENT = MomentTask()
