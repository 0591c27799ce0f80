"""Resolving ids from annotation files to paths that never leave the dataset root."""

from __future__ import annotations

import os
from pathlib import Path


class UnsafePathError(ValueError):
    """A video id (or other relative name) would resolve outside its dataset root."""


def resolve_under(root: str | os.PathLike, relative: str, *, source: str | None = None) -> Path:
    """Join ``relative`` onto ``root`` and refuse any result outside ``root``.

    Absolute names, ``..`` components and symlinks that point elsewhere are all refused.

    Args:
        root: the dataset root directory.
        relative: a name taken from an annotation file (a video id, a file name).
        source: where the name came from (``"Train_frameqa_question.csv line 7"``) for the error.

    Returns:
        The resolved absolute path (it need not exist).

    Raises:
        UnsafePathError: naming the id, its source and the root.
    """
    root_resolved = Path(root).resolve()
    where = f" (from {source})" if source else ""
    if not relative or "\x00" in relative:
        raise UnsafePathError(f"empty or invalid video id {relative!r}{where}")
    if os.path.isabs(relative) or Path(relative).is_absolute():
        raise UnsafePathError(
            f"video id {relative!r}{where} is an absolute path; ids must be relative to the dataset "
            f"root {root_resolved}"
        )
    candidate = (root_resolved / relative).resolve()
    if candidate != root_resolved and root_resolved not in candidate.parents:
        raise UnsafePathError(
            f"video id {relative!r}{where} resolves to {candidate}, outside the dataset root "
            f"{root_resolved}; fix the annotation file or the --root option"
        )
    return candidate
