"""``benchmarks/gpu_suite.py``: refuses at once without CUDA; ``--dry-run`` builds and runs every step once
on CPU (tiny sizes), the data path beside the MSPAN step included, so the suite cannot rot before a GPU
is lent."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from models import MODELS

SUITE = Path(__file__).resolve().parents[2] / "benchmarks" / "gpu_suite.py"


def _suite_module():
    sys.path.insert(0, str(SUITE.parent))  # it imports its sibling benchmarks as the script does
    try:
        import gpu_suite
    finally:
        sys.path.remove(str(SUITE.parent))
    return gpu_suite


def test_without_cuda_it_stops_at_once_with_one_line(monkeypatch, capsys):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert _suite_module().main([]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.strip().splitlines() == [
        "gpu_suite: no CUDA device is available (--dry-run checks the suite on CPU)"
    ]


@pytest.mark.slow
def test_dry_run_runs_every_step_in_both_precisions_and_the_data_path(tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=os.getcwd())
    proc = subprocess.run([sys.executable, str(SUITE), "--dry-run", "--workdir", str(tmp_path)], env=env,
                          capture_output=True, text=True, timeout=600)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = [line for line in proc.stdout.splitlines() if re.match(r"\| \d{4}-\d\d-\d\d \|", line)]
    data = [row.split(" | ") for row in rows if " | QADataset + QACollate" in row]
    rows = [row for row in rows if " | QADataset + QACollate" not in row]
    assert len(data) == 1 and data[0][3] == "1", proc.stdout  # the data path, one worker (dry run)
    samples, per_worker, step, ratio = (float(cell.strip(" |x")) for cell in data[0][4:8])
    assert samples > 0 and per_worker == samples and step > 0
    assert ratio == pytest.approx(samples / step, rel=0.1)
    steps = [row.split(" | ")[2] for row in rows]
    expected = ["appearance", "motion", "motion", "objects", "objects", *["train"] * len(MODELS), "e2e",
                "e2e"]
    assert steps == expected, proc.stdout
    assert any("bottomup_r101_vg" in row for row in rows), proc.stdout
    e2e = [row for row in rows if "| siasamrea end to end train step, resnet18 at 32 px" in row]
    assert len(e2e) == 2 and "checkpointing off" in e2e[0] and "checkpointing on" in e2e[1], proc.stdout
    for name in MODELS:  # every registered model is trained
        assert any(f"| {name} train step, tiny config" in row for row in rows), (name, proc.stdout)
    for row in rows:  # fp32 and bf16 figures, both positive
        fp32, bf16 = (float(cell.split()[0]) for cell in row.split(" | ")[4:6])
        assert fp32 > 0 and bf16 > 0, row
    assert "DRY RUN" in proc.stdout and "Traceback" not in proc.stderr
