"""What a run writes besides checkpoints: ``train.log``, ``config.yaml``, the chance-level baselines of
``metrics.json``, the prediction files, and strict JSON."""

from __future__ import annotations

import contextlib
import csv
import json
import logging
import math
import sys
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from pipelines.atomic import atomic_path
from train.config import TrainConfig
from train.losses import (
    COUNT_MAX,
    COUNT_MIN,
    MOMENT_PROTOCOLS,
    PredictionRecord,
    moment_metrics,
    moment_records,
    nms_top_k,
)
from train.moments import best_prior_moments, random_moments
from train.runner.data import RunData

log = logging.getLogger("train")


def write_yaml(path: Path, obj: dict[str, Any]) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(yaml.safe_dump(obj, sort_keys=False), encoding="utf-8")


class RunLogHandler(logging.FileHandler):
    """``train.log``. When the file cannot be written (a full disk) it says so once on stderr and stops,
    instead of printing a ``--- Logging error ---`` traceback for every later line."""

    failed = False

    def handleError(self, record: logging.LogRecord) -> None:  # noqa: N802 - logging's name
        if not self.failed:
            self.failed = True
            err = sys.exc_info()[1]
            reason = getattr(err, "strerror", None) or err
            sys.stderr.write(f"vqa-train: warning: cannot write {self.baseFilename} ({reason}); its lines "
                             "go to the console only from here on\n")

    def emit(self, record: logging.LogRecord) -> None:
        if not self.failed:
            super().emit(record)

    def flush(self) -> None:
        with contextlib.suppress(OSError):
            super().flush()

    def close(self) -> None:
        with contextlib.suppress(OSError):
            super().close()


def attach_log_file(path: Path) -> logging.Handler:
    handler = RunLogHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    return handler


def baselines(task_type: str, data: RunData, prepared: Any, cfg: TrainConfig | None = None
               ) -> dict[str, float]:
    """Chance-level references on test: majority answer (open), 1/C (mc), train-mean count (count);
    moment retrieval: a random window and the best prior, with every moment metric."""
    if task_type == "moment":
        return moment_baselines(data, cfg or TrainConfig())
    tr, te = data.datasets["train"], data.datasets["test"]
    tr_ans = np.asarray(tr.split.answers)[tr.indices]
    te_ans = np.asarray(te.split.answers)[te.indices]
    if task_type == "open":
        majority = Counter(tr_ans.tolist()).most_common(1)[0][0]
        # the most common training answer of each question type (e.g. "what color ..." -> its mode)
        by_type: dict[str, Counter] = {}
        for i, a in zip(tr.indices, tr_ans.tolist(), strict=True):
            by_type.setdefault(tr.split.qtypes[i], Counter())[a] += 1
        te_types = [te.split.qtypes[i] for i in te.indices]
        prior = [by_type[t].most_common(1)[0][0] if t in by_type else majority for t in te_types]
        return {
            "majority_answer_accuracy": float((te_ans == majority).mean()),
            "type_prior_accuracy": float((te_ans == np.asarray(prior)).mean()),
        }
    if task_type == "mc":
        return {"random_choice_accuracy": 1.0 / tr.split.candidates.shape[1]}
    mean = float(tr_ans.mean())
    pred = min(max(round(mean), COUNT_MIN), COUNT_MAX)
    return {"train_mean_mse": float(((pred - te_ans.astype(np.float64)) ** 2).mean())}


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


def write_predictions(out: Path, split: str, records: Sequence[PredictionRecord], task_type: str) -> None:
    if task_type == "moment":
        write_moment_predictions(out, split, records)
        return
    score_name = "squared_error" if task_type == "count" else "correct"
    rows = []
    for r in records:
        row = {"qid": r.qid, "video_id": r.video_id, "qtype": r.qtype, "prediction": r.prediction,
               "answer": r.answer}
        if r.raw is not None:
            row["raw_prediction"] = r.raw
        row[score_name] = r.score if task_type == "count" else bool(r.score)
        rows.append(row)
    with atomic_path(out / f"predictions_{split}.jsonl") as tmp:
        tmp.write_text("".join(json.dumps(r, sort_keys=False) + "\n" for r in rows), encoding="utf-8")
    header = ["qid", "video_id", "qtype", "prediction", "answer"]
    header += ["raw_prediction"] if task_type == "count" else []
    header += [score_name]
    with atomic_path(out / f"predictions_{split}.csv") as tmp:
        with open(tmp, "w", encoding="utf-8", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=header)
            w.writeheader()
            w.writerows(rows)


def protocol_record(cfg: TrainConfig) -> dict[str, Any]:
    """Which protocol produced a moment run's metrics (``metrics.json``: ``moment_protocol``)."""
    return {"name": cfg.moment_iou, "description": MOMENT_PROTOCOLS[cfg.moment_iou],
            "listed_nms": cfg.moment_nms}


def finite(obj: Any) -> Any:
    """Replace NaN/inf floats by None so metrics.json stays strict JSON."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: finite(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [finite(v) for v in obj]
    return obj
