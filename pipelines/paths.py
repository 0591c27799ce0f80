"""Resolving ids from annotation files to paths that never leave the dataset root.

The rule is checked on the path **as written**: an id that is absolute or whose ``..`` components climb
above the root is refused. Symbolic links are not resolved: a link the user placed inside the root
(a ``gifs/`` directory linked to another disk, a common cluster layout) is followed like any directory,
because the user, not the annotation file, chose where it points.
"""

from __future__ import annotations

import os
from pathlib import Path


class UnsafePathError(ValueError):
    """A video id (or other relative name) would resolve outside its dataset root."""


def is_within(root: str | os.PathLike, path: str | os.PathLike) -> bool:
    """True when ``path`` as written (made absolute, ``..`` folded, links not followed) lies under ``root``.

    ``root`` may be given through a link: ``path`` under either the root as written or its target counts.
    """
    target = os.path.normpath(os.path.abspath(path))
    for base in {os.path.normpath(os.path.abspath(root)), os.path.realpath(root)}:
        if target == base or target.startswith(base.rstrip(os.sep) + os.sep):
            return True
    return False


def resolve_under(root: str | os.PathLike, relative: str, *, source: str | None = None) -> Path:
    """Join ``relative`` onto ``root`` and refuse any result outside ``root``.

    Absolute names and ``..`` components that climb above the root are refused; symbolic links inside
    the root are left to the operating system (followed when the file is opened).

    Args:
        root: the dataset root directory.
        relative: a name taken from an annotation file (a video id, a file name).
        source: where the name came from (``"Train_frameqa_question.csv line 7"``) for the error.

    Returns:
        The absolute path ``root/relative`` with ``.`` and ``..`` folded (it need not exist).

    Raises:
        UnsafePathError: naming the id, its source and the root.
    """
    root_abs = Path(os.path.normpath(os.path.abspath(root)))
    where = f" (from {source})" if source else ""
    if not relative or "\x00" in relative:
        raise UnsafePathError(f"empty or invalid video id {relative!r}{where}")
    if os.path.isabs(relative) or Path(relative).is_absolute():
        raise UnsafePathError(
            f"video id {relative!r}{where} is an absolute path; ids must be relative to the dataset "
            f"root {root_abs}"
        )
    candidate = Path(os.path.normpath(root_abs / relative))
    if not is_within(root_abs, candidate):
        raise UnsafePathError(
            f"video id {relative!r}{where} resolves to {candidate}, outside the dataset root "
            f"{root_abs}; fix the annotation file or the --root option"
        )
    return candidate
