"""The HTML report's page from a run's files alone (no dataset, no checkpoint): tables, samples, escaping."""

from __future__ import annotations

import json
import re

from train.tools.report_html import write_html_report


def _run(tmp_path, metrics, preds):
    (tmp_path / "metrics.json").write_text(json.dumps(metrics))
    (tmp_path / "predictions_test.jsonl").write_text("\n".join(json.dumps(p) for p in preds))
    return tmp_path


BASE = {"model": "mspan", "dataset": "tgif", "best_epoch": 2, "epochs_completed": 3,
        "best_checkpoint": "/nowhere/best.pt", "provenance": {"features": {"random_weights": True}}}


def test_open_ended_page_lists_metrics_types_and_escaped_samples(tmp_path):
    metrics = dict(BASE, task="frameqa", task_type="open", selection_metric="accuracy",
                   val={"accuracy": 0.25}, test={"accuracy": 0.5, "loss": 1.23456, "per/x": 3},
                   baselines_test={"majority_answer_accuracy": 0.2})
    preds = [{"qid": f"q{i}<i>", "video_id": "v", "qtype": "what" if i % 2 else None, "answer": "a",
              "prediction": "a" if i < 3 else "b", "correct": i < 3} for i in range(6)]
    page = write_html_report(_run(tmp_path, metrics, preds), samples=2).read_text()
    text = re.sub(r">\s+<", "><", page)
    assert "<h1>mspan on tgif/frameqa (open)</h1>" in text and "RANDOM backbone weights" in text
    assert "<tr><td><b>accuracy</b> (higher is better)</td><td>0.2500</td><td><b>0.5000</b></td></tr>" in text
    assert "<tr><td>chance: majority_answer_accuracy</td><td></td><td>0.2000</td></tr>" in text
    assert "<tr><td>loss</td><td></td><td>1.235</td></tr>" in text and "per/x" not in text
    # per type: "-" (3 questions, 2 right), "what" (3, 1 right); the most common answer is "a" in both
    assert "<tr><td>-</td><td>3</td><td>0.6667</td><td>1.000</td></tr>" in text
    assert "<tr><td>what</td><td>3</td><td>0.3333</td><td>1.000</td></tr>" in text
    assert "Correct test predictions (2 sampled)" in text and "Wrong test predictions (2 sampled)" in text
    assert "&lt;i&gt;</b> video" in text and "<i></b>" not in text  # qids are escaped
    assert "(question text not available)" in text
    assert text.count("<i>no figures: ") == 4 and "<img" not in text  # no checkpoint: the reason, no figure


def test_moment_page_has_every_metric_beside_each_baseline(tmp_path):
    metrics = dict(BASE, model="cmin", dataset="activitynet-captions", task=None, task_type="moment",
                   selection_metric="R@1,IoU=0.5", val={"R@1,IoU=0.5": 0.1, "mIoU": 0.2, "num_questions": 5},
                   test={"R@1,IoU=0.5": 0.15, "mIoU": 0.25, "num_questions": 6},
                   baselines_test={"random_window/R@1,IoU=0.5": 0.05, "best_prior/mIoU": 0.2},
                   moment_protocol={"name": "steps", "description": "a <b> c"})
    preds = [{"qid": f"m{i}", "video_id": "v", "answer": [1.0, 2.5], "prediction": [[0.5, 2.0, 0.9]],
              "iou": i / 4} for i in range(4)]
    text = re.sub(r">\s+<", "><", write_html_report(_run(tmp_path, metrics, preds), samples=1).read_text())
    assert "<th>chance: best_prior (test)</th><th>chance: random_window (test)</th>" in text
    assert ("<tr><td><b>R@1,IoU=0.5</b></td><td>0.1000</td><td><b>0.1500</b></td><td></td><td>0.0500</td>"
            "</tr>") in text
    assert "<tr><td>mIoU</td><td>0.2000</td><td><b>0.2500</b></td><td>0.2000</td><td></td></tr>" in text
    assert "Queries: 5 val, 6 test. Protocol (model and baselines): steps: a &lt;b&gt; c." in text
    assert "Found test moments (top moment IoU ≥ 0.5) (1 sampled)" in text
    assert "Missed test moments (IoU &lt; 0.5) (1 sampled)" in text and "Per question type" not in text
    assert "predicted (top moments, score) <b class='ok'>0.50-2.00 s (0.900)</b>" in text
