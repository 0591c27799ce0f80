"""A static HTML page for a finished run: ``python -m train.report RUN [RUN ...] --html``.

Writes ``RUN/report.html`` and its figures under ``RUN/report/``:

- the selection metric on val and test beside the chance-level baselines on test (``metrics.json``),
  every test metric, and a loud note when the features came from random backbone weights;
- per question type: the number of test questions, the run's accuracy (open / mc; count: MSE) and
  the share of the type's most common answer (from ``predictions_test.jsonl``);
- a sample of correct and of wrong test predictions (fixed seed), each with the question, the true and
  predicted answers and the explanation figure (``train.explain``): the sampled frames with the model's
  attention, recomputed from the raw video with ``train.answer.Answerer`` on ``best.pt``. When the video
  or a self-contained checkpoint is not available, the sample is listed with the reason instead.

Moment retrieval (CMIN) runs: every moment metric (R@n at each IoU, mIoU) on val and test beside the
same metric of both baselines (a random window, the training split's best prior); no question types;
the samples are queries whose top moment has IoU >= 0.5 with the true one ("correct") or not, each with
its top moments and the timeline figure (``train.explain``) with the true moment drawn.
"""

from __future__ import annotations

import html
import json
import random
import re
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import yaml

from pipelines.atomic import atomic_path

__all__ = ["write_html_report"]

_STYLE = """
body { font-family: sans-serif; margin: 2em; color: #222; max-width: 1100px; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; }
td, th { border: 1px solid #ccc; padding: 4px 10px; text-align: left; }
th { background: #f2f2f2; }
.warn { background: #fff0f0; border: 2px solid #d22; padding: 0.6em 1em; font-weight: bold; }
.sample { border: 1px solid #ddd; margin: 0.8em 0; padding: 0.6em; }
.ok { color: #176b2c; } .bad { color: #b3261e; }
img { max-width: 100%; }
"""


#: a moment counts as found ("correct" sample) at this IoU of the top moment with the true one
MOMENT_HIT_IOU = 0.5


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


def _per_type(preds: list[dict[str, Any]], count: bool) -> list[tuple[str, int, float, float]]:
    groups: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for p in preds:
        groups[p.get("qtype") or "-"].append(p)
    rows = []
    for qtype, items in sorted(groups.items()):
        if count:
            score = sum(p["squared_error"] for p in items) / len(items)
        else:
            score = sum(bool(p["correct"]) for p in items) / len(items)
        top = Counter(str(p["answer"]) for p in items).most_common(1)[0][1] / len(items)
        rows.append((qtype, len(items), score, top))
    return rows


def _sample(preds: list[dict[str, Any]], n: int, count: bool) -> tuple[list[dict], list[dict]]:
    if preds and "iou" in preds[0]:  # moment retrieval
        right = [p for p in preds if p["iou"] >= MOMENT_HIT_IOU]
        wrong = [p for p in preds if p["iou"] < MOMENT_HIT_IOU]
    elif count:
        right = [p for p in preds if p["squared_error"] == 0]
        wrong = [p for p in preds if p["squared_error"] != 0]
    else:
        right = [p for p in preds if p["correct"]]
        wrong = [p for p in preds if not p["correct"]]
    rng = random.Random(0)
    return (
        sorted(rng.sample(right, min(n, len(right))), key=lambda p: p["qid"]),
        sorted(rng.sample(wrong, min(n, len(wrong))), key=lambda p: p["qid"]),
    )


def _figure(answerer: Any, record: Any, path: Path | None, out: Path) -> str | None:
    """Render one sample's figure; the error text when it cannot be made."""
    from train.answer import AnswerError
    from train.explain import render_explanation

    if answerer is None or isinstance(answerer, str):
        return answerer or "no checkpoint"
    if record is None or path is None:
        return "question or video not found in the dataset"
    moment = hasattr(record, "query")
    truth = (record.start_s, record.end_s) if moment else None
    try:
        if moment:
            result = answerer.answer(path, record.query)
        else:
            result = answerer.answer(path, record.question, candidates=record.candidates,
                                     segment=getattr(record, "segment", None))  # How2QA's ts
        render_explanation(result, answerer, out, ground_truth=truth)
    except AnswerError as exc:
        return str(exc)
    return None


def write_html_report(run: Path, *, samples: int = 4) -> Path:
    """Write ``run/report.html`` (see the module docstring) and return its path.

    Raises:
        FileNotFoundError: no ``metrics.json`` in ``run`` (the run did not finish).
    """
    run = Path(run)
    metrics_path = run / "metrics.json"
    if not metrics_path.is_file():
        raise FileNotFoundError(f"{metrics_path}: missing; did `vqa-train` finish in {run}?")
    m = json.loads(metrics_path.read_text(encoding="utf-8"))
    conf = (
        yaml.safe_load((run / "config.yaml").read_text(encoding="utf-8"))
        if (run / "config.yaml").is_file()
        else {}
    )
    pred_path = run / "predictions_test.jsonl"
    preds = (
        [json.loads(x) for x in pred_path.read_text(encoding="utf-8").splitlines()]
        if pred_path.is_file()
        else []
    )
    count = m["task_type"] == "count"
    e = html.escape
    name = f"{m['model']} on {m['dataset']}{'/' + m['task'] if m.get('task') else ''} ({m['task_type']})"
    body = [
        f"<h1>{e(name)}</h1>",
        f"<p>run: <code>{e(str(run.resolve()))}</code>; best epoch {m.get('best_epoch')}"
        f" of {m.get('epochs_completed')}; checkpoint <code>{e(str(m.get('best_checkpoint')))}</code></p>",
    ]
    feats = (m.get("provenance") or {}).get("features") or {}
    if feats.get("random_weights"):
        body.append(
            '<p class="warn">The features of this run were extracted with RANDOM backbone weights: '
            "these results test the pipeline only and are not research results.</p>"
        )
    metric = m["selection_metric"]
    better = "lower is better" if m.get("selection_mode") == "min" else "higher is better"
    if m["task_type"] == "moment":
        body.extend(_moment_metrics_html(m))
    else:
        body.extend(_metrics_html(m, metric, better))
    if preds and m["task_type"] != "moment":
        score = "MSE" if count else "accuracy"
        body.append(
            f"<h2>Per question type (test)</h2><table><tr><th>type</th><th>questions</th><th>{score}</th>"
            "<th>most common answer's share</th></tr>"
        )
        for qtype, n, s, top in _per_type(preds, count):
            body.append(f"<tr><td>{e(qtype)}</td><td>{n}</td><td>{s:.4f}</td><td>{top:.3f}</td></tr>")
        body.append("</table>")
    if preds:
        body.extend(_samples_html(run, m, conf, preds, samples, count))
    page = (
        f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{e(name)}</title><style>{_STYLE}</style>"
        f"</head><body>{''.join(body)}</body></html>\n"
    )
    out = run / "report.html"
    with atomic_path(out) as tmp:
        tmp.write_text(page, encoding="utf-8")
    return out


def _metrics_html(m: dict[str, Any], metric: str, better: str) -> list[str]:
    e = html.escape
    body = []
    body.append(
        "<h2>Metrics beside chance level</h2><table><tr><th>metric</th><th>val</th><th>test</th></tr>"
    )
    body.append(
        f"<tr><td><b>{e(metric)}</b> ({better})</td><td>{m['val'].get(metric, float('nan')):.4f}</td>"
        f"<td><b>{m['test'].get(metric, float('nan')):.4f}</b></td></tr>"
    )
    for key, value in sorted(m.get("baselines_test", {}).items()):
        body.append(f"<tr><td>chance: {e(key)}</td><td></td><td>{value:.4f}</td></tr>")
    for key, value in sorted(m["test"].items()):
        if key != metric and "/" not in key and isinstance(value, int | float):
            body.append(f"<tr><td>{e(key)}</td><td></td><td>{value:.4g}</td></tr>")
    body.append("</table>")
    return body


def _protocol_text(m: dict[str, Any]) -> str:
    """The protocol that produced a moment run's numbers (``metrics.json``), or that it is not recorded."""
    p = m.get("moment_protocol")
    return f"{p['name']}: {p['description']}" if p else "not recorded (a run from before the record)"


def _moment_metrics_html(m: dict[str, Any]) -> list[str]:
    """Every moment metric on val and test beside the same metric of each baseline (test)."""
    e = html.escape
    metric = m["selection_metric"]
    base = m.get("baselines_test", {})
    names = sorted({k.split("/", 1)[0] for k in base if "/" in k})
    metrics = sorted((k for k in m["test"] if "/" not in k and k != "num_questions"
                      and isinstance(m["test"][k], int | float)), key=lambda k: (k == "mIoU", k))
    body = [
        "<h2>Metrics beside chance level</h2><p>R@n,IoU=m: share of test queries with one of the top n "
        "moments at temporal IoU &ge; m with the true moment; mIoU: mean IoU of the top moment (higher "
        f"is better; the checkpoint is selected on val {e(metric)}). Queries: "
        f"{int(m['val'].get('num_questions', 0))} val, {int(m['test'].get('num_questions', 0))} test. "
        f"Protocol (model and baselines): {e(_protocol_text(m))}.</p>",
        "<table><tr><th>metric</th><th>val</th><th>test</th>"
        + "".join(f"<th>chance: {e(n)} (test)</th>" for n in names) + "</tr>",
    ]
    for k in metrics:
        label = f"<b>{e(k)}</b>" if k == metric else e(k)
        cells = "".join(
            f"<td>{base[f'{n}/{k}']:.4f}</td>" if f"{n}/{k}" in base else "<td></td>" for n in names
        )
        body.append(
            f"<tr><td>{label}</td><td>{m['val'].get(k, float('nan')):.4f}</td>"
            f"<td><b>{m['test'][k]:.4f}</b></td>{cells}</tr>"
        )
    body.append("</table>")
    return body


def _load_answerer(m: dict[str, Any]) -> Any:
    from train.answer import Answerer, AnswerError
    from train.checkpoint import CheckpointError

    try:
        return Answerer.from_checkpoint(m["best_checkpoint"])
    except (AnswerError, CheckpointError, KeyError) as exc:
        return f"no figures: {exc}"


def _samples_html(
    run: Path, m: dict[str, Any], conf: dict[str, Any], preds: list[dict[str, Any]], n: int, count: bool
) -> list[str]:
    e = html.escape
    right, wrong = _sample(preds, n, count)
    records, paths = _question_texts(conf) if conf else ({}, {})
    answerer = _load_answerer(m) if right or wrong else None
    fig_dir = run / "report"
    fig_dir.mkdir(exist_ok=True)
    body = []
    moment = m["task_type"] == "moment"
    titles = (
        (f"Found test moments (top moment IoU &ge; {MOMENT_HIT_IOU})", f"Missed test moments (IoU &lt; "
         f"{MOMENT_HIT_IOU})") if moment else ("Correct test predictions", "Wrong test predictions")
    )
    for title, items, cls in ((titles[0], right, "ok"), (titles[1], wrong, "bad")):
        body.append(f"<h2>{title} ({len(items)} sampled)</h2>")
        if not items:
            body.append("<p>none in the test split</p>")
        for p in items:
            rec = records.get(p["qid"])
            text = (rec.query if moment else rec.question) if rec is not None else None
            question = text or "(question text not available)"
            pred, truth = p["prediction"], p["answer"]
            if moment:
                pred = ", ".join(f"{a:.2f}-{b:.2f} s ({c:.3f})" for a, b, c in pred)
                truth = f"{truth[0]:.2f}-{truth[1]:.2f} s; IoU of the top moment {p['iou']:.3f}"
            elif rec is not None and rec.candidates:
                pred, truth = (
                    f"[{pred}] {rec.candidates[int(pred)]}",
                    f"[{truth}] {rec.candidates[int(truth)]}",
                )
            png = fig_dir / f"{re.sub(r'[^A-Za-z0-9._-]', '_', p['qid'])}.png"  # no '#', ':' in URLs
            err = _figure(answerer, rec, paths.get(p["video_id"]), png)
            body.append(
                f'<div class="sample"><b>{e(p["qid"])}</b> video <code>{e(p["video_id"])}</code><br>'
                f"{'query' if moment else 'Q'}: {e(question)}<br>"
                f"predicted{' (top moments, score)' if moment else ''} <b class='{cls}'>{e(str(pred))}</b>, "
                f"true <b>{e(str(truth))}</b><br>"
            )
            body.append(f"<i>{e(err)}</i>" if err else f'<img src="report/{e(png.name)}" alt="explanation">')
            body.append("</div>")
    return body
