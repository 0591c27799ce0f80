"""``benchmarks/train_bench.py``: how it finds and imports the official code beside ours."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

BENCHES = Path(__file__).resolve().parents[2] / "benchmarks"


def _train_bench():
    sys.path.insert(0, str(BENCHES))  # it imports its sibling benchmarks as the script does
    try:
        import train_bench
    finally:
        sys.path.remove(str(BENCHES))
    return train_bench


def _fake_masn_clone(root: Path) -> Path:
    """A directory laid out like MASN-pytorch: ``model/masn.py`` in a package without ``__init__.py``."""
    (root / "model").mkdir(parents=True)
    (root / "model" / "masn.py").write_text("WHERE = 'fake official MASN'\n", encoding="utf-8")
    return root


def test_official_code_given_as_a_path_is_importable_and_dropped_afterwards(tmp_path):
    tb = _train_bench()
    clone = _fake_masn_clone(tmp_path / "MASN-pytorch")
    with tb.official_code(clone):  # a Path: put on sys.path as a string, or "No module named 'model'"
        assert importlib.import_module("model.masn").WHERE == "fake official MASN"
    assert "model.masn" not in sys.modules and "model" not in sys.modules
    assert str(clone.resolve()) not in sys.path


def test_official_clones_are_found_directly_or_under_a_holder_directory(tmp_path):
    tb = _train_bench()
    clone = _fake_masn_clone(tmp_path / "holder" / "MASN-pytorch")
    masn = tb.BENCHES["masn"]
    assert tb.find_official(masn, [str(clone)]) == str(clone.resolve())
    assert tb.find_official(masn, [str(tmp_path / "holder")]) == str(clone.resolve())
    assert tb.find_official(tb.BENCHES["mspan"], [str(tmp_path / "holder")]) is None
    assert tb.find_official(tb.BENCHES["siasamrea"], [str(tmp_path / "holder")]) is None
