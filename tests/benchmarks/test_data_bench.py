"""``benchmarks/data_bench.py --dry-run``: the data-path benchmark builds its synthetic feature directories
and times the training loader (in process and with a worker) and each stage, so it cannot rot."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "benchmarks" / "data_bench.py"


@pytest.mark.slow
def test_dry_run_times_both_datasets_through_the_loader(tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=os.getcwd())
    cmd = [sys.executable, str(BENCH), "--dry-run", "--workdir", str(tmp_path), "--workers", "0,1"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    dated = re.compile(r"\| \d{4}-\d\d-\d\d \|")
    rows = [line.split(" | ") for line in proc.stdout.splitlines() if dated.match(line)]
    assert [(r[1], r[3]) for r in rows] == [("qa", "0"), ("qa", "1"), ("moment", "0"), ("moment", "1")]
    for row in rows:
        assert float(row[6]) > 0 and "KiB" in row[8], row  # samples/s, bytes delivered per sample
        assert float(row[10].rstrip(" |")) > 0, row  # samples per CPU-second of the loading processes
    assert "48 videos" in rows[0][2] and "12 videos" in rows[2][2]
    assert re.search(r"- qa: read \d+ .* item \d+ .* collate \d+", proc.stdout), proc.stdout
    assert re.search(r"- moment: read \d+ .* item \d+ .* collate \d+", proc.stdout), proc.stdout
    assert "DRY RUN" in proc.stdout and "Traceback" not in proc.stderr
    manifest = tmp_path / "dry-qa" / "manifest.json"
    written = manifest.stat().st_mtime_ns
    again = subprocess.run(cmd + ["--only", "qa", "--no-stages"], env=env, capture_output=True, text=True,
                           timeout=300)  # fmt: skip
    assert again.returncode == 0, again.stderr[-3000:]
    assert manifest.stat().st_mtime_ns == written  # the directory was reused, not written again
