"""Print the test results of finished runs beside their chance-level baselines.

Usage: ``python -m train.tools.report RUN_DIR [RUN_DIR ...] [--html [--samples N]] [--expected FILE]`` (each
holding the ``metrics.json`` that ``vqa-train`` writes). Used by the demo; handy after any sweep. ``--html``
also writes ``RUN_DIR/report.html`` for each run (``train.tools.report_html``: metrics beside chance, per
question type, sampled correct and wrong test predictions with their frames and attention).
``--expected FILE`` adds the documented range of each test figure (``scripts/demo_ranges.json``:
``{"ranges": {run directory name: {metric: [low, high]}}}``) and says whether the figure lies in it.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from train.tasks import get_task

__all__ = ["format_report", "main"]


def format_report(run_dirs: list[Path], expected: dict | None = None) -> str:
    """A plain-text table: model, dataset/task, metric, val, test, baselines (test), features, run directory.

    The features column shows the start of the feature fingerprint (the run's provenance record) and
    ``RANDOM WEIGHTS`` when the backbones had random weights, ``released (FORMAT)`` for features imported from
    the authors' release (``vqa-extract import``); GloVe coverage is shown when a file was used.
    A moment metric names the protocol that produced it and its baselines (``[official]``: CMIN's own
    evaluation, ``train.tasks.moment_losses.MOMENT_PROTOCOLS``; ``[protocol not recorded]`` for older runs).
    With ``expected`` (run directory name -> metric -> ``[low, high]``) a column gives each test figure's
    documented range and ``ok`` or ``OUTSIDE``.

    Raises:
        FileNotFoundError: a run directory without ``metrics.json`` (the run did not finish).
    """
    header = ("model", "dataset/task", "metric", "val", "test", "chance level on test", "features", "run")
    if expected is not None:
        header = (*header[:5], "documented range", *header[5:])
    rows = [header]
    for run in run_dirs:
        path = Path(run) / "metrics.json"
        if not path.is_file():
            raise FileNotFoundError(f"{path}: missing; did `vqa-train` finish in {run}?")
        m = json.loads(path.read_text(encoding="utf-8"))
        better = "lower is better" if m.get("selection_mode") == "min" else "higher is better"
        name = m["dataset"] + (f"/{m['task']}" if m.get("task") else "")
        for metric, label, base in get_task(m["task_type"]).summary_metrics(m):
            chance = ", ".join(f"{k} {v:.3f}" for k, v in sorted(base.items()))
            row = (m["model"], name, f"{label} ({better})", f"{m['val'][metric]:.3f}",
                   f"{m['test'][metric]:.3f}", chance, _features(m.get("provenance")), str(run))
            if expected is not None:
                row = (*row[:5], _in_range(m["test"][metric], expected.get(Path(run).name, {}).get(metric)),
                       *row[5:])
            rows.append(row)
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _in_range(value: float, bounds: list[float] | None) -> str:
    """``0.700-0.800 ok``, ``0.700-0.800 OUTSIDE``, or ``-`` without a documented range."""
    if not bounds:
        return "-"
    low, high = bounds
    inside = round(low, 3) <= round(value, 3) <= round(high, 3)
    return f"{low:.3f}-{high:.3f} {'ok' if inside else 'OUTSIDE'}"


def _features(record: dict | None) -> str:
    if not record:
        return "not recorded"
    f = record["features"]
    text = f["fingerprint"].removeprefix("sha256:")[:12]
    if f.get("random_weights"):
        text += " RANDOM WEIGHTS"
    imported = (f.get("provenance") or {}).get("imported")
    if imported:
        text += f" released ({imported.get('format')})"
    if record.get("glove"):
        text += f", GloVe {100 * record['glove']['coverage']:.0f}%"
    return text


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    html = "--html" in args
    samples = 4
    if "--samples" in args:
        i = args.index("--samples")
        if i + 1 >= len(args) or not args[i + 1].isdigit():
            print("train.tools.report: --samples needs a number", file=sys.stderr)
            return 2
        samples = int(args[i + 1])
        del args[i : i + 2]
    expected, expected_file = None, None
    if "--expected" in args:
        i = args.index("--expected")
        if i + 1 >= len(args):
            print("train.tools.report: --expected needs a file", file=sys.stderr)
            return 2
        expected_file = Path(args[i + 1])
        del args[i : i + 2]
    args = [a for a in args if a != "--html"]
    if not args:
        print("usage: python -m train.tools.report RUN_DIR [RUN_DIR ...] [--html [--samples N]]"
              " [--expected FILE]", file=sys.stderr)
        return 2
    try:
        if expected_file is not None:
            expected = json.loads(expected_file.read_text(encoding="utf-8"))["ranges"]
        print(format_report([Path(a) for a in args], expected))
        if html:
            from train.tools.report_html import write_html_report

            for a in args:
                print(f"report page: {write_html_report(Path(a), samples=samples)}")
    except (FileNotFoundError, KeyError, json.JSONDecodeError) as err:
        print(f"train.tools.report: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
