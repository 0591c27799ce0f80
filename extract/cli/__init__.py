"""``vqa-extract``: video features into sharded HDF5, with Ray, resume and failure records.

The bare form extracts (``extraction.py``: the group, its options and the extraction's steps). The
subcommands: ``import`` (feature files released by the papers' authors, ``extract/importer.py``) and
``export-hcrn`` (HCRN's file layout) in ``formats.py``; ``demo-data`` (the synthetic demo datasets) in
``demo.py``; ``info`` (a feature directory's manifest summary), ``verify`` (every shard's checksum) and
``repair`` (rebuild a lost manifest from the shards) in ``directory.py``. Nothing is parsed at import
time: ``main()`` runs the click group.
"""

from __future__ import annotations

import logging
import sys

from extract.cli.demo import demo_data_cmd
from extract.cli.directory import info_cmd, repair_cmd, verify_cmd
from extract.cli.extraction import EXIT_FAILED_VIDEOS, cli
from extract.cli.formats import export_hcrn_cmd, import_cmd

__all__ = ["EXIT_FAILED_VIDEOS", "cli", "main"]

for _command in (export_hcrn_cmd, import_cmd, demo_data_cmd, info_cmd, verify_cmd, repair_cmd):
    cli.add_command(_command)


def main(argv: list[str] | None = None) -> None:
    """Console entry point ``vqa-extract``."""
    logging.basicConfig(
        level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr
    )
    from pipelines.errors import run_cli

    run_cli(cli, argv, prog_name="vqa-extract", user_errors=_user_errors)


def _user_errors() -> tuple[type[BaseException], ...]:
    """The exception classes that are the user's to fix (one line, no traceback; see pipelines.errors)."""
    from extract.engine import BackendError, OutputInUseError, ResumeMismatchError
    from extract.hcrn import HCRNExportError
    from extract.manifest import ManifestError
    from extract.released import ReleasedFormatError
    from extract.weights import WeightsError
    from pipelines.atomic import DirectoryInUseError
    from pipelines.datasets import DatasetFormatError
    from pipelines.glove import GloveFormatError
    from pipelines.paths import UnsafePathError

    return (BackendError, OutputInUseError, ResumeMismatchError, HCRNExportError, ManifestError,
            WeightsError, DatasetFormatError, GloveFormatError, UnsafePathError, DirectoryInUseError,
            ReleasedFormatError)
