"""What a run writes besides checkpoints and the task kind's prediction files: ``train.log``, ``config.yaml``
and strict JSON."""

from __future__ import annotations

import contextlib
import logging
import math
import sys
from pathlib import Path
from typing import Any

import yaml

from pipelines.atomic import atomic_path

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


def finite(obj: Any) -> Any:
    """Replace NaN/inf floats by None so metrics.json stays strict JSON."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: finite(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [finite(v) for v in obj]
    return obj
