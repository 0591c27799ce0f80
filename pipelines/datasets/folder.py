"""``folder``: every video file under a directory, for extraction without annotation files.

The video id is the path relative to the root without its extension, with ``/`` separators, so
``a/x.mp4`` and ``b/x.mp4`` get the distinct ids ``a/x`` and ``b/x``. Hidden files and directories
(names starting with ``.``, e.g. temporary files of an interrupted copy) are skipped. Two files that
differ only in their extension (``a/x.mp4`` and ``a/x.avi``) would share an id and are refused.
Symbolic links to directories are followed (each real directory is listed once, so a link back to an
ancestor cannot loop); a file name that is not valid UTF-8 is refused (ids are UTF-8 text).
"""

from __future__ import annotations

import os
from pathlib import Path

from pipelines.datasets.base import VIDEO_EXTENSIONS, DatasetAdapter, DatasetFormatError, _Parsed, _Ref

__all__ = ["FolderAdapter"]


class FolderAdapter(DatasetAdapter):
    """All video files (``VIDEO_EXTENSIONS``, any letter case) under ``root``, recursively.

    It has no splits and no records; :meth:`videos` lists the files and :meth:`missing_videos` is empty.
    """

    name = "folder"
    kind = "videos"

    def splits(self) -> tuple[str, ...]:
        return ()

    def _parse(self) -> _Parsed:
        refs: dict[str, _Ref] = {}
        seen_dirs = {os.path.realpath(self.root)}
        for dirpath, dirnames, filenames in os.walk(self.root, followlinks=True):
            kept = []
            for d in sorted(dirnames):
                real = os.path.realpath(os.path.join(dirpath, d))
                if not d.startswith(".") and real not in seen_dirs:  # a directory reached twice: skip
                    seen_dirs.add(real)
                    kept.append(d)
            dirnames[:] = kept
            for filename in sorted(filenames):
                if filename.startswith(".") or Path(filename).suffix.lower() not in VIDEO_EXTENSIONS:
                    continue
                rel = Path(dirpath, filename).relative_to(self.root).as_posix()
                _check_utf8(rel, self.root)
                video_id = rel[: -len(Path(filename).suffix)]
                path = self._resolve(rel, source=f"file {rel} under {self.root}")
                if video_id in refs:
                    raise DatasetFormatError(
                        f"folder: {refs[video_id].location} and {rel} would share the video id {video_id!r}; "
                        f"rename one of them (ids are relative paths without extension)"
                    )
                refs[video_id] = _Ref(video_id, path, path, rel)
        return _Parsed(records={}, refs=[refs[k] for k in sorted(refs)])


def _check_utf8(rel: str, root: Path) -> None:
    """Refuse a file name that is not valid UTF-8 (os.walk hands it over with surrogate escapes)."""
    try:
        rel.encode("utf-8")
    except UnicodeEncodeError:
        shown = rel.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
        raise DatasetFormatError(
            f"folder: the file name '{shown}' under {root} is not valid UTF-8 (video ids are UTF-8 text); "
            "rename the file"
        ) from None
