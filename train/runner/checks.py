"""The checks a run makes before it trains or evaluates: a resumed run's config, an evaluated checkpoint's
dataset, vocabularies and settings, a converted release's official text, the GloVe coverage and the
transformer text encoder's files."""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pipelines.official_text import TEXT_RULES, encode_official
from train.checkpoint import CheckpointError
from train.config import ConfigError, TrainConfig, config_to_dict
from train.recipes import get_recipe
from train.runner.spec import EVAL_RUNTIME_KEYS, RESUMABLE_KEYS, RunSpec
from train.tasks import get_task
from train.text_encoder import LoadedTextEncoder, check_text_encoder, load_text_encoder

log = logging.getLogger("train")


def run_text_encoder(spec: RunSpec, model_cfg: Any, saved_provenance: Mapping[str, Any] | None,
                     eval_meta: Mapping[str, Any] | None) -> LoadedTextEncoder | None:
    """The transformer question encoder of a run (None without one: its recipe's ``text_reading``),
    refused when its directory's files differ from the ones the resumed run or the evaluated checkpoint
    recorded."""
    reading = get_recipe(spec.model).text_reading(model_cfg)
    if not reading.encoder:
        return None
    loaded = load_text_encoder(reading.encoder_path, max_len=reading.max_len,
                               subtitle_max_len=reading.subtitle_max_len)
    if eval_meta is not None:
        check_text_encoder((eval_meta.get("provenance") or {}).get("text_encoder"), loaded.record,
                           what="--eval-only", source=str(spec.checkpoint))
    elif saved_provenance is not None:
        check_text_encoder(saved_provenance.get("text_encoder"), loaded.record, what="--resume",
                           source=str(spec.out / "config.yaml"))
    if spec.glove is not None:
        log.warning("--glove %s is not used: the questions are read by the transformer text encoder",
                    spec.glove)
    else:
        log.info("word embeddings: not used (the questions are read by the transformer text encoder)")
    return loaded


def check_resume_config(saved: dict[str, Any], current: dict[str, Any], path: Path) -> None:
    diffs = []
    for key in ("model_name", "dataset", "task"):
        if saved.get(key) != current.get(key):
            diffs.append(f"{key}: {saved.get(key)!r} -> {current.get(key)!r}")
    saved = get_task(current["task_type"]).upgrade_saved_config(saved, source=str(path))
    movable = get_recipe(current["model_name"]).path_keys  # may move: their files' sha256 are checked
    for section in ("train", "model", "moment"):
        a, b = saved.get(section) or {}, current.get(section) or {}
        for k in sorted(set(a) | set(b)):
            if section == "train" and (k in RESUMABLE_KEYS or k == "amp"):
                continue  # amp: its resolved precision is compared (check_precision)
            if section == "model" and k in movable:
                continue
            if a.get(k) != b.get(k):
                diffs.append(f"{section}.{k}: {a.get(k)!r} -> {b.get(k)!r}")
    if diffs:
        raise ConfigError(
            f"--resume: the config differs from the run's saved {path}: " + "; ".join(diffs)
            + f". Only train.{{{', '.join(sorted(RESUMABLE_KEYS))}}} may change on resume; use a new --out"
        )


def check_glove(info: Any, cfg: TrainConfig) -> None:
    """Refuse a GloVe file that matches no question word (unless allowed); warn on a low coverage."""
    if info is None:
        return
    if info.found == 0 and info.words:
        if not cfg.allow_zero_glove_coverage:
            raise ConfigError(
                f"GloVe file {info.file} matches none of the {info.words} question words (e.g. "
                f"{', '.join(info.missing_examples[:5])}): wrong file, language or format? Set "
                "train.allow_zero_glove_coverage=true to train with random embeddings anyway"
            )
        log.warning("GloVe file %s matches no question word: embeddings are random (allowed)", info.file)
    elif info.coverage < cfg.glove_warn_coverage:
        log.warning("GloVe coverage is low: %d/%d question words (%.1f%%, below "
                    "train.glove_warn_coverage=%s) found in %s", info.found, info.words, 100 * info.coverage,
                    cfg.glove_warn_coverage, info.file)


def check_eval_meta(meta: Mapping[str, Any], spec: RunSpec, question_vocab: list[str]) -> None:
    """The evaluation must use the checkpoint's dataset, question vocabulary and training settings."""
    for key, value in (("dataset", spec.dataset), ("task", spec.task)):
        if key in meta and meta[key] != value:
            raise ConfigError(f"{spec.checkpoint}: trained on {key} {meta[key]!r}, not {value!r}")
    if "question_vocab" in meta and list(meta["question_vocab"]) != question_vocab:
        raise CheckpointError(
            f"{spec.checkpoint}: its question vocabulary ({len(meta['question_vocab'])} words) differs from "
            f"this dataset's ({len(question_vocab)}); evaluate on the annotations it was trained with"
        )
    if "train_config" in meta:
        saved = json.loads(meta["train_config"])
        now = config_to_dict(spec.train)
        diffs = [k for k in sorted(saved) if k not in EVAL_RUNTIME_KEYS and now.get(k) != saved[k]]
        if diffs:
            raise ConfigError(
                f"--eval-only: train.{{{', '.join(diffs)}}} differ from the checkpoint {spec.checkpoint}; "
                "evaluation takes them from the checkpoint (see train.runner.eval_train_config)"
            )
    elif "converted_from" not in meta:  # a converted release has none: the given train.* settings apply
        log.warning("%s records no training config (older toolkit); using the given train.* settings",
                    spec.checkpoint)


def official_text(spec: RunSpec, adapter: Any, meta: Mapping[str, Any], task_type: str) -> Any:
    """The dataset encoded as the official preprocessing of a converted checkpoint encodes it.

    Raises:
        CheckpointError: the checkpoint was converted without the official vocabulary (or, open-ended,
            answer list), or for another task type.
    """
    model, classes = spec.model, get_task(task_type).answer_vocab  # open-ended: the answer list too
    if meta.get("task_type") not in (None, task_type):
        raise ConfigError(f"{spec.checkpoint}: converted from a {meta['task_type']} checkpoint; this run's "
                          f"task is {task_type}")
    missing = ["--vocab (the official question vocabulary)"] if "text_rule" not in meta else []
    if classes and not meta.get("answer_vocab"):
        missing.append("--answers (the official answer list)")
    if missing or "question_vocab" not in meta:
        raise CheckpointError(
            f"{spec.checkpoint}: converted from an official {model} checkpoint without "
            f"{' and '.join(missing) or 'its vocabulary'}: its word embeddings and answer outputs are "
            f"indexed by the official preprocessing's vocabularies, not this dataset's, so it cannot be "
            f"evaluated. Convert it again: vqa-convert {model} OFFICIAL_FILE --out FILE --vocab FILE"
            + (" --answers FILE" if classes else "")
        )
    if meta["text_rule"] not in TEXT_RULES:
        raise CheckpointError(f"{spec.checkpoint}: text rule {meta['text_rule']!r} is unknown to this "
                              f"toolkit (it knows {', '.join(TEXT_RULES)}); update the toolkit")
    rules = get_recipe(model).text_rules  # the official rules of this model's releases
    if meta["text_rule"] not in rules:
        raise CheckpointError(f"{spec.checkpoint}: text rule {meta['text_rule']!r} is not one of {model}'s "
                              f"({', '.join(rules) or 'none'}); convert the release with vqa-convert {model}")
    prepared = encode_official(adapter, meta["text_rule"], meta["question_vocab"],
                               meta.get("answer_vocab") or [])
    log.info("%s: questions encoded with the checkpoint's official rule (%s) and vocabulary (%d words%s)",
             spec.checkpoint, TEXT_RULES[meta["text_rule"]].description, len(prepared.question_vocab),
             f", {len(prepared.answer_vocab)} answers" if classes else "")
    if classes:
        oov = int((prepared.splits["test"].answers < 0).sum())
        log.info("test: %d/%d answers are not in the official answer list (counted wrong)", oov,
                 len(prepared.splits["test"].answers))
    return prepared

