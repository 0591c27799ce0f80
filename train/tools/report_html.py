"""A static HTML page for a finished run: ``python -m train.tools.report RUN [RUN ...] --html``.

Writes ``RUN/report.html`` and its figures under ``RUN/report/``:

- the selection metric on val and test beside the chance-level baselines on test (``metrics.json``),
  every test metric, and a loud note when the features came from random backbone weights;
- per question type: the number of test questions, the run's accuracy (open / mc; count: MSE) and
  the share of the type's most common answer (from ``predictions_test.jsonl``);
- a sample of correct and of wrong test predictions (fixed seed), each with the question, the true and
  predicted answers and the explanation figure (``train.tools.explain``): the sampled frames with the model's
  attention, recomputed from the raw video with ``train.tools.answer.Answerer`` on ``best.pt``. When the video
  or a self-contained checkpoint is not available, the sample is listed with the reason instead.

Moment retrieval (CMIN) runs: every moment metric (R@n at each IoU, mIoU) on val and test beside the
same metric of both baselines (a random window, the training split's best prior); no question types;
the samples are queries whose top moment has IoU >= 0.5 with the true one ("correct") or not, each with
its top moments and the timeline figure (``train.tools.explain``) with the true moment drawn.

The page is the Jinja2 template ``train/tools/templates/report.html`` (every value escaped); this module reads
the run and computes what the page shows.
"""

from __future__ import annotations

import json
import random
import re
from collections import Counter, defaultdict
from functools import cache
from pathlib import Path
from typing import Any

import jinja2
import yaml

from pipelines.atomic import atomic_path
from train.tasks import TaskKind, get_task

__all__ = ["write_html_report"]


def _question_texts(conf: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Path]]:
    """(qid -> QARecord / MomentRecord of the test split, video id -> path), read through the run's
    dataset adapter."""
    from pipelines.datasets import get_dataset

    try:
        adapter = get_dataset(conf["dataset"])(Path(conf["root"]), task=conf.get("task"))
        test = adapter.moments("test") if adapter.kind == "moment" else adapter.records("test")
        return {r.qid: r for r in test}, {v.video_id: v.path for v in adapter.videos()}
    except Exception as exc:  # noqa: BLE001 - the page still lists the predictions
        import logging

        logging.getLogger("train").warning(
            "report: %s annotations not readable: %s", conf.get("dataset"), exc
        )
        return {}, {}


def _per_type(preds: list[dict[str, Any]], kind: TaskKind) -> list[tuple[str, int, float, float]]:
    groups: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for p in preds:
        groups[p.get("qtype") or "-"].append(p)
    rows = []
    for qtype, items in sorted(groups.items()):
        score = sum(kind.prediction_score(p) for p in items) / len(items)
        top = Counter(str(p["answer"]) for p in items).most_common(1)[0][1] / len(items)
        rows.append((qtype, len(items), score, top))
    return rows


def _sample(preds: list[dict[str, Any]], n: int, kind: TaskKind) -> tuple[list[dict], list[dict]]:
    right = [p for p in preds if kind.prediction_hit(p)]
    wrong = [p for p in preds if not kind.prediction_hit(p)]
    rng = random.Random(0)
    return (
        sorted(rng.sample(right, min(n, len(right))), key=lambda p: p["qid"]),
        sorted(rng.sample(wrong, min(n, len(wrong))), key=lambda p: p["qid"]),
    )


def _figure(answerer: Any, kind: TaskKind, record: Any, path: Path | None, out: Path) -> str | None:
    """Render one sample's figure; the error text when it cannot be made."""
    from train.tools.answer import AnswerError
    from train.tools.explain import render_explanation

    if answerer is None or isinstance(answerer, str):
        return answerer or "no checkpoint"
    if record is None or path is None:
        return "question or video not found in the dataset"
    try:
        result, truth = kind.ask(answerer, path, record)
        render_explanation(result, answerer, out, ground_truth=truth)
    except AnswerError as exc:
        return str(exc)
    return None


@cache
def _template() -> jinja2.Template:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("train.tools", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,  # a value the page names but the context lacks is an error
        trim_blocks=True,
        lstrip_blocks=True,
    )
    return env.get_template("report.html")


def _read_run(run: Path) -> tuple[dict[str, Any], dict[str, Any], list[dict[str, Any]]]:
    """(metrics.json, config.yaml or {}, the test predictions or [])."""
    metrics_path = run / "metrics.json"
    if not metrics_path.is_file():
        raise FileNotFoundError(f"{metrics_path}: missing; did `vqa-train` finish in {run}?")
    m = json.loads(metrics_path.read_text(encoding="utf-8"))
    conf_path = run / "config.yaml"
    conf = yaml.safe_load(conf_path.read_text(encoding="utf-8")) if conf_path.is_file() else {}
    pred_path = run / "predictions_test.jsonl"
    preds = (
        [json.loads(x) for x in pred_path.read_text(encoding="utf-8").splitlines()]
        if pred_path.is_file()
        else []
    )
    return m, conf, preds


def write_html_report(run: Path, *, samples: int = 4) -> Path:
    """Write ``run/report.html`` (see the module docstring) and return its path.

    Raises:
        FileNotFoundError: no ``metrics.json`` in ``run`` (the run did not finish).
    """
    run = Path(run)
    m, conf, preds = _read_run(run)
    kind = get_task(m["task_type"])
    task = "/" + m["task"] if m.get("task") else ""
    feats = (m.get("provenance") or {}).get("features") or {}
    page = _template().render(
        name=f"{m['model']} on {m['dataset']}{task} ({m['task_type']})",
        run_dir=str(run.resolve()),
        best_epoch=m.get("best_epoch"),
        epochs_completed=m.get("epochs_completed"),
        best_checkpoint=str(m.get("best_checkpoint")),
        random_weights=bool(feats.get("random_weights")),
        all_metrics=_all_metrics(m) if kind.report_all_metrics else None,
        qa=None if kind.report_all_metrics else _qa_metrics(m),
        per_type=_per_type_table(preds, kind) if preds and kind.per_type_score else None,
        samples=_samples(run, m, conf, preds, samples, kind) if preds else [],
        text_label=kind.text_short,
        prediction_label=kind.prediction_label,
    )
    out = run / "report.html"
    with atomic_path(out) as tmp:
        tmp.write_text(page, encoding="utf-8")
    return out


def _qa_metrics(m: dict[str, Any]) -> dict[str, Any]:
    """The selection metric on val and test, the chance baselines and the other test metrics."""
    metric = m["selection_metric"]
    return {
        "metric": metric,
        "better": "lower is better" if m.get("selection_mode") == "min" else "higher is better",
        "val": m["val"].get(metric, float("nan")),
        "test": m["test"].get(metric, float("nan")),
        "baselines": sorted(m.get("baselines_test", {}).items()),
        "others": [
            (k, v)
            for k, v in sorted(m["test"].items())
            if k != metric and "/" not in k and isinstance(v, int | float)
        ],
    }


def _per_type_table(preds: list[dict[str, Any]], kind: TaskKind) -> dict[str, Any]:
    return {"score": kind.per_type_score, "rows": _per_type(preds, kind)}


def _protocol_text(m: dict[str, Any]) -> str:
    """The protocol that produced a moment run's numbers (``metrics.json``), or that it is not recorded."""
    p = m.get("moment_protocol")
    return f"{p['name']}: {p['description']}" if p else "not recorded (a run from before the record)"


def _all_metrics(m: dict[str, Any]) -> dict[str, Any]:
    """Every metric on val and test beside the same metric of each baseline (test), and the protocol that
    produced them (moment retrieval: ``TaskKind.report_all_metrics``)."""
    metric = m["selection_metric"]
    base = m.get("baselines_test", {})
    names = sorted({k.split("/", 1)[0] for k in base if "/" in k})
    metrics = sorted((k for k in m["test"] if "/" not in k and k != "num_questions"
                      and isinstance(m["test"][k], int | float)), key=lambda k: (k == "mIoU", k))
    rows = [
        {
            "name": k,
            "selected": k == metric,
            "val": m["val"].get(k, float("nan")),
            "test": m["test"][k],
            "baselines": [base.get(f"{n}/{k}") for n in names],
        }
        for k in metrics
    ]
    return {
        "metric": metric,
        "val_queries": int(m["val"].get("num_questions", 0)),
        "test_queries": int(m["test"].get("num_questions", 0)),
        "protocol": _protocol_text(m),
        "baselines": names,
        "rows": rows,
    }


def _load_answerer(m: dict[str, Any]) -> Any:
    from extract.rebuild import RebuildError
    from train.checkpoint import CheckpointError
    from train.tools.answer import Answerer, AnswerError

    try:
        return Answerer.from_checkpoint(m["best_checkpoint"])
    except (AnswerError, RebuildError, CheckpointError, KeyError) as exc:
        return f"no figures: {exc}"


def _samples(
    run: Path, m: dict[str, Any], conf: dict[str, Any], preds: list[dict[str, Any]], n: int, kind: TaskKind
) -> list[dict[str, Any]]:
    """The sampled correct ("ok") and wrong ("bad") test predictions, each with its figure or the reason
    there is none."""
    right, wrong = _sample(preds, n, kind)
    records, paths = _question_texts(conf) if conf else ({}, {})
    answerer = _load_answerer(m) if right or wrong else None
    fig_dir = run / "report"
    fig_dir.mkdir(exist_ok=True)
    return [
        {"cls": cls, "title": title,
         "entries": [_sample_view(p, records, paths, answerer, fig_dir, kind) for p in items]}
        for items, cls, title in ((right, "ok", kind.sample_titles[0]), (wrong, "bad", kind.sample_titles[1]))
    ]


def _sample_view(p: dict[str, Any], records: dict[str, Any], paths: dict[str, Path], answerer: Any,
                 fig_dir: Path, kind: TaskKind) -> dict[str, Any]:
    """One sample as the page shows it; renders its explanation figure into ``fig_dir``."""
    rec = records.get(p["qid"])
    text = getattr(rec, kind.text_key) if rec is not None else None
    pred, truth = kind.describe_sample(p, rec)
    png = fig_dir / f"{re.sub(r'[^A-Za-z0-9._-]', '_', p['qid'])}.png"  # no '#', ':' in URLs
    return {
        "qid": p["qid"],
        "video_id": p["video_id"],
        "question": text or "(question text not available)",
        "prediction": pred,
        "truth": truth,
        "error": _figure(answerer, kind, rec, paths.get(p["video_id"]), png),
        "image": png.name,
    }
