"""The optional transformer question encoder: a local Hugging Face checkpoint directory, never downloaded.

``model.text_encoder=transformer`` with ``model.text_encoder_path=DIR`` (SiaSamRea; ``models/siasamrea.py``
says what the model does with it) needs the ``text`` extra (``pip install 'videoqa-toolkit[text]'``,
i.e. ``transformers``). A model's recipe (``text_reading``) turns its config into the
:class:`train.recipes.TextReading` read here: no model's config field is named in this module. This
module is the only place that imports ``transformers``, and only when such a config is used, so the
GloVe path never pays for it.

- **Loading** (:func:`load_text_encoder`): ``AutoTokenizer`` and ``AutoModel`` from ``DIR`` with
  ``local_files_only=True`` (and ``HF_HUB_OFFLINE=1`` unless the user set it; no remote code), so a
  run never reaches the network. A missing directory or package is one line saying what to pass or
  install. A pooling head (BERT's ``pooler``) is dropped: only the last hidden states are read.
- **Provenance** (:func:`directory_record`): the sha256 of every file of ``DIR`` (hidden files and
  directories skipped) and one fingerprint over them; recorded as ``provenance.text_encoder`` in
  ``config.yaml``, every checkpoint and ``metrics.json``. ``--resume``, ``--eval-only`` and
  ``vqa-answer`` refuse a directory whose fingerprint differs (:func:`check_text_encoder`), naming both
  directories, both fingerprints and the files that differ. A moved copy with the same files is
  accepted (``model.text_encoder_path`` may then point at the new place).
- **Tokens** (:func:`encode_questions`): the batch keys ``text_ids``, ``text_mask``, ``text_type_ids``
  (C', L) per question: one row for the question, or one ``[CLS] question [SEP] candidate [SEP]`` row per
  candidate (multiple choice), truncated to ``model.text_max_len`` tokens. With subtitles (How2QA) each
  row goes on with the question's subtitle text, ``... subtitle [SEP]``, its tokens cut to
  ``model.subtitle_max_len`` and typed as the second segment. Training tokenizes every split once;
  ``vqa-answer`` calls the same function for its one question.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from extract.weights import sha256_file
from train.config import ConfigError
from train.data import TEXT_KEYS

if TYPE_CHECKING:
    from train.recipes import TextReading

__all__ = [
    "TEXT_KEYS",
    "LoadedTextEncoder",
    "TextEncoderError",
    "check_text_encoder",
    "directory_record",
    "encode_questions",
    "for_checkpoint",
    "load_text_encoder",
]

log = logging.getLogger("train")

INSTALL_HINT = "pip install 'videoqa-toolkit[text]' (or pip install transformers)"


class TextEncoderError(ConfigError):
    """The text encoder directory is missing, unreadable, or not the one a run recorded."""


@dataclass
class LoadedTextEncoder:
    """A tokenizer and a pre-trained module read from one local directory, and its provenance record."""

    path: Path
    tokenizer: Any
    model: Any
    record: dict[str, Any]
    max_len: int = 64
    subtitle_max_len: int = 64

    def tokens(self, question: str, candidates: Sequence[str] | None = None,
               subtitle: str | None = None) -> dict[str, np.ndarray]:
        """The ``TEXT_KEYS`` arrays (C', L) of one question (see :func:`encode_questions`); ``subtitle``
        given (``""`` for none), the rows go on with it as in a run that read subtitles."""
        return encode_questions(self.tokenizer, [question], [candidates], self.max_len,
                                subtitles=None if subtitle is None else [subtitle],
                                subtitle_max_len=self.subtitle_max_len)[0]


def directory_record(path: str | os.PathLike) -> dict[str, Any]:
    """``{"dir", "fingerprint": "sha256:...", "files": {relative name: sha256}}`` of a checkpoint directory.

    Every regular file under ``path`` counts (followed links included), except hidden files and
    directories (``.cache``, ``.gitattributes``); the fingerprint hashes the sorted (name, sha256) pairs.
    """
    root = Path(path)
    files: dict[str, str] = {}
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            full = Path(dirpath) / name
            if name.startswith(".") or not full.is_file():
                continue
            files[full.relative_to(root).as_posix()] = sha256_file(full)
    h = hashlib.sha256()
    for name in sorted(files):
        h.update(f"{name}\0{files[name]}\n".encode())
    return {"dir": str(root.resolve()), "fingerprint": f"sha256:{h.hexdigest()}", "files": files}


def load_text_encoder(path: str | os.PathLike | None, *, max_len: int = 64, subtitle_max_len: int = 64,
                      option: str = "model.text_encoder_path", hint: str = "") -> LoadedTextEncoder:
    """Read the tokenizer and the pre-trained module from a local directory (nothing is downloaded).

    Args:
        path: the checkpoint directory (``save_pretrained`` output: config, weights, tokenizer files).
        max_len: tokens per text row (``model.text_max_len``).
        subtitle_max_len: subtitle tokens appended to a row (``model.subtitle_max_len``).
        option: how the user names the directory, for messages; hint: appended to them.

    Raises:
        TextEncoderError: no directory, no ``transformers`` package, or files it cannot read.
    """
    if not path or not Path(path).is_dir():
        raise TextEncoderError(
            f"{option}={path}: not a directory; pass a local Hugging Face checkpoint directory (config.json, "
            f"weights, tokenizer files, e.g. written by save_pretrained){hint}; nothing is downloaded"
        )
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the runs are offline
    try:
        import transformers
    except ImportError:
        raise TextEncoderError(
            f"model.text_encoder=transformer needs the transformers package: {INSTALL_HINT}"
        ) from None
    transformers.utils.logging.disable_progress_bar()
    record = directory_record(path)
    try:
        tokenizer = transformers.AutoTokenizer.from_pretrained(str(path), local_files_only=True,
                                                               trust_remote_code=False)
        model = transformers.AutoModel.from_pretrained(str(path), local_files_only=True,
                                                       trust_remote_code=False)
    except (OSError, ValueError, KeyError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise TextEncoderError(
            f"{option}={path}: cannot load a tokenizer and model from it ({first}); pass a directory "
            f"written by save_pretrained (config.json, model weights, tokenizer files){hint}"
        ) from None
    if getattr(model, "pooler", None) is not None:  # unused (the last hidden states are read); under DDP
        model.pooler = None  # every parameter must receive a gradient
    record["model_type"] = str(getattr(model.config, "model_type", ""))
    record["hidden_size"] = int(model.config.hidden_size)
    log.info("text encoder: %s (%s, hidden size %d, fingerprint %s)", record["dir"], record["model_type"],
             record["hidden_size"], record["fingerprint"])
    return LoadedTextEncoder(Path(path), tokenizer, model, record, max_len, subtitle_max_len)


def for_checkpoint(reading: TextReading, meta: Mapping[str, Any], override: str | os.PathLike | None, *,
                   source: str) -> LoadedTextEncoder | None:
    """The text encoder a checkpoint was trained with (``vqa-answer``), checked against its record.

    Args:
        reading: how the checkpoint's model config reads questions (its recipe's ``text_reading``);
            meta: the checkpoint's ``meta``.
        override: ``--text-encoder DIR`` (a moved copy), else the recorded ``text_encoder_path``.
        source: the checkpoint, for messages.

    Returns:
        None for a GloVe model.

    Raises:
        TextEncoderError: missing directory or package, other files than recorded, or ``override`` for a
            model without a text encoder.
    """
    if not reading.encoder:
        if override:
            raise TextEncoderError(f"--text-encoder: {source} reads questions with GloVe, not a transformer; "
                                   "drop the option")
        return None
    loaded = load_text_encoder(override or reading.encoder_path, max_len=reading.max_len,
                               subtitle_max_len=reading.subtitle_max_len,
                               option="--text-encoder" if override else "the recorded text encoder",
                               hint="" if override else " with --text-encoder DIR")
    check_text_encoder((meta.get("provenance") or {}).get("text_encoder"), loaded.record, what="vqa-answer",
                       source=source)
    return loaded


def check_text_encoder(recorded: Mapping[str, Any] | None, current: Mapping[str, Any], *, what: str,
                       source: str) -> None:
    """Refuse a text encoder directory other than the recorded one (same files, same sha256).

    Args:
        recorded: ``provenance.text_encoder`` of the run or checkpoint (None: it recorded none).
        current: :func:`directory_record` of the directory in use.
        what: ``"--resume"``, ``"--eval-only"``, ``"vqa-answer"``; source: where the record was read.

    Raises:
        TextEncoderError: naming both directories, both fingerprints and the files that differ.
    """
    if not recorded or "fingerprint" not in recorded:
        raise TextEncoderError(
            f"{what}: {source} records no text encoder fingerprint, so the directory {current['dir']} "
            "cannot be checked; retrain with this toolkit version"
        )
    if recorded["fingerprint"] == current["fingerprint"]:
        if recorded.get("dir") != current["dir"]:
            log.info("%s: the text encoder moved from %s to %s (same files)", what, recorded.get("dir"),
                     current["dir"])
        return
    old, new = dict(recorded.get("files") or {}), dict(current.get("files") or {})
    changed = sorted(n for n in set(old) | set(new) if old.get(n) != new.get(n))
    raise TextEncoderError(
        f"{what}: the text encoder differs from the one recorded in {source}: recorded {recorded.get('dir')} "
        f"({recorded['fingerprint'][:19]}...), now {current['dir']} ({current['fingerprint'][:19]}...); "
        f"files that differ: {', '.join(changed[:5]) or '(none listed)'}; use the recorded directory "
        "(model.text_encoder_path, vqa-answer --text-encoder)"
    )


def encode_questions(tokenizer: Any, questions: Sequence[str], candidates: Sequence[Sequence[str] | None],
                     max_len: int, *, subtitles: Sequence[str | None] | None = None,
                     subtitle_max_len: int = 64) -> list[dict[str, np.ndarray]]:
    """Token arrays of many questions, one dict of :data:`TEXT_KEYS` -> (C', L) per question.

    Args:
        tokenizer: a Hugging Face tokenizer.
        questions: the question texts as in the annotations.
        candidates: per question its candidates (multiple choice: one row per question + candidate
            pair) or None (one row).
        max_len: tokens per row including special tokens (longest first truncation of a pair).
        subtitles: per question its subtitle text (How2QA; ``""``/None: none), appended to each of its
            rows as ``subtitle [SEP]`` with segment id 1; None = no subtitles.
        subtitle_max_len: subtitle tokens kept (the first ones).

    Returns:
        ``text_ids`` int64, ``text_mask`` bool (True = token), ``text_type_ids`` int64 (segment ids, zeros
        when the tokenizer has none), each (C', L) with L the longest row of that question.
    """
    firsts, seconds, rows = [], [], []
    for q, cands in zip(questions, candidates, strict=True):
        pairs = [(q, c) for c in cands] if cands else [(q, None)]
        rows.append(len(pairs))
        firsts += [a for a, _ in pairs]
        seconds += [b for _, b in pairs]
    has_pairs = any(b is not None for b in seconds)
    if has_pairs and not all(b is not None for b in seconds):
        raise ValueError("either every question has candidates or none has")
    enc = tokenizer(firsts, seconds if has_pairs else None, truncation=True, max_length=max_len)
    ids, types = enc["input_ids"], enc.get("token_type_ids")
    if subtitles is not None:
        ids, types = _append_subtitles(tokenizer, ids, types, rows, subtitles, subtitle_max_len)
    out, start = [], 0
    for n in rows:
        block = range(start, start + n)
        L = max(len(ids[i]) for i in block)
        arr = np.zeros((n, L), dtype=np.int64)
        mask = np.zeros((n, L), dtype=bool)
        tt = np.zeros((n, L), dtype=np.int64)
        for r, i in enumerate(block):
            arr[r, : len(ids[i])] = ids[i]
            mask[r, : len(ids[i])] = True
            if types is not None:
                tt[r, : len(types[i])] = types[i]
        out.append({"text_ids": arr, "text_mask": mask, "text_type_ids": tt})
        start += n
    return out


def _append_subtitles(tokenizer: Any, ids: list[list[int]], types: list[list[int]] | None, rows: list[int],
                      subtitles: Sequence[str | None], max_len: int) -> tuple[list, list | None]:
    """Each question's rows followed by its subtitle tokens (at most ``max_len``) and a separator."""
    if len(subtitles) != len(rows):
        raise ValueError(f"{len(subtitles)} subtitles for {len(rows)} questions")
    sep = tokenizer.sep_token_id if tokenizer.sep_token_id is not None else tokenizer.eos_token_id
    sub_ids = tokenizer([s or "" for s in subtitles], add_special_tokens=False)["input_ids"]
    new_ids, new_types, start = [], [] if types is not None else None, 0
    for n, sub in zip(rows, sub_ids, strict=True):
        extra = list(sub[:max_len]) + ([sep] if sub and sep is not None else [])
        for i in range(start, start + n):
            new_ids.append(list(ids[i]) + extra)
            if new_types is not None:
                new_types.append(list(types[i]) + [1] * len(extra))
        start += n
    return new_ids, new_types
