"""The provenance record of a run: which features and word vectors its results come from.

One record, built once per run by :func:`build_record`, is written wherever results go: ``config.yaml``
(``provenance:``), every checkpoint (``meta["provenance"]``), ``metrics.json`` (``"provenance"``),
``train.log`` (:func:`describe`) and the ``train.tools.report`` table. It holds plain values only (str,
int, float, bool, None, list, dict), so checkpoints still load with ``torch.load(weights_only=True)``
and a later reader (e.g. a self-contained ``vqa-answer`` checkpoint) can use it without this module::

    {
      "features": {
        "dir": "/abs/path/features",            # where they were read (informative: may move)
        "fingerprint": "sha256:...",            # extract.manifest.fingerprint: identity + shard checksums
        "feature_set": "mspan",
        "provenance": {...},                    # the manifest's: backbones, weights sha256, samplers, ...
        "random_weights": false,                # any backbone with random weights (not research features)
        "videos": 1234
      },
      "glove": {"file": ..., "format": ..., "dim": 300, "found": 980, "words": 1000, "coverage": 0.98,
                "missing_examples": [...]} | null,
      "precision": "bf16" | "fp32" | "fp16",    # train.amp resolved for the device (extract.accel)
      "toolkit_version": "...",
      "text_encoder": {"dir", "fingerprint": "sha256:...", "files": {name: sha256}, "model_type",
                       "hidden_size"}                # only with model.text_encoder=transformer
    }

:func:`check_features` compares a recorded fingerprint with the features in use: a resume or an
evaluation on other features is refused unless the user allows it (``--allow-feature-change``).
:func:`check_precision` refuses a resume whose precision resolves otherwise than the run's;
:func:`recorded_precision` is what an evaluation of a checkpoint runs in.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from extract.accel import resolve_precision
from extract.backbones import RANDOM_SEED
from extract.manifest import fingerprint
from extract.shards import mentions_random_weights
from pipelines.glove import GloveInfo
from pipelines.version import toolkit_version
from train.config import ConfigError

__all__ = [
    "CHECKPOINT_FORMAT",
    "FeatureChangeError",
    "PrecisionChangeError",
    "RANDOM_WEIGHTS_BANNER",
    "build_record",
    "check_features",
    "check_precision",
    "describe",
    "feature_record",
    "recorded_precision",
    "self_contained_meta",
    "train_precision",
]

log = logging.getLogger("train")

#: ``meta["checkpoint_format"]`` of self-contained checkpoints (see :func:`self_contained_meta`); older
#: checkpoints have no such key and cannot answer questions without their run directory.
CHECKPOINT_FORMAT = 2

RANDOM_WEIGHTS_BANNER = (
    "#" * 78 + "\n"
    "# WARNING: these features were extracted with RANDOM backbone weights\n"
    "# (vqa-extract --weights random). Results are for testing the pipeline only and\n"
    "# are NOT research results. metrics.json records provenance.features.random_weights.\n"
    + "#" * 78
)


class FeatureChangeError(ConfigError):
    """A resume or an evaluation would use other features than the run recorded."""


def feature_record(features_dir: str | Path, reader: Any) -> dict[str, Any]:
    """The ``features`` part of the record, from a ``FeatureReader`` of ``features_dir``."""
    manifest = reader.manifest
    return {
        "dir": str(Path(features_dir).resolve()),
        "fingerprint": fingerprint(manifest),
        "feature_set": manifest["feature_set"],
        "provenance": manifest.get("provenance", {}),
        "random_weights": mentions_random_weights(manifest.get("provenance", {})),
        "videos": len(reader),
    }


class PrecisionChangeError(ConfigError):
    """A resume would train in another precision than the run recorded."""


def build_record(features: Mapping[str, Any], glove: GloveInfo | None, precision: str | None = None,
                 text_encoder: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The run's record (see the module docstring); ``precision``: the resolved ``train.amp``;
    ``text_encoder``: the transformer question encoder's directory record
    (``train.text_encoder.directory_record``), present only when one is used."""
    record = {
        "features": dict(features),
        "glove": glove.to_json() if glove is not None else None,
        "precision": precision,
        "toolkit_version": toolkit_version(),
    }
    if text_encoder is not None:
        record["text_encoder"] = dict(text_encoder)
    return record


def train_precision(amp: str, device: torch.device) -> str:
    """``train.amp`` resolved for ``device`` (``extract.accel.resolve_precision``): bf16, fp32 or fp16.

    Raises:
        ConfigError: fp16 on a device other than CUDA.
    """
    try:
        return resolve_precision(amp, device)
    except ValueError as exc:
        raise ConfigError(f"train.amp={amp!r}: {exc}") from exc


def recorded_precision(recorded: Mapping[str, Any] | None, amp: str, device: torch.device) -> str:
    """The precision a run recorded; for a run older than the record, the one that ran then.

    Before ``train.amp`` applied to the CPU, autocast (bf16 or fp16) ran on CUDA only: such a run's
    precision is its ``amp`` on CUDA and fp32 elsewhere (``amp`` ``none`` is fp32 everywhere).
    """
    value = (recorded or {}).get("precision")
    if value:
        return str(value)
    return amp if device.type == "cuda" and amp in ("bf16", "fp16") else "fp32"


def check_precision(recorded: Mapping[str, Any] | None, saved_amp: str, amp: str, current: str, *,
                    device: torch.device, source: str) -> None:
    """Refuse a ``--resume`` whose precision (``current``, resolved) differs from the run's.

    Args:
        recorded: the run's ``provenance`` record (None or without ``precision``: an older run).
        saved_amp: the run's ``train.amp`` as saved (for an older run's precision).
        amp: ``train.amp`` of this resume.
        current: ``amp`` resolved for ``device``: the precision this resume would train in.
        device: where it would train.
        source: the file the record was read from, for the message.

    Raises:
        PrecisionChangeError: the precisions differ (``train.amp`` ``auto`` on other hardware, or an
            older run's config now meaning autocast on the CPU).
    """
    before = recorded_precision(recorded, saved_amp, device)
    if before != current:
        raise PrecisionChangeError(
            f"--resume: {source} records training in {before}, but train.amp={amp!r} is {current} "
            f"on {device}; resume with --set train.amp={before} (or start a new --out)"
        )


def check_features(
    recorded: Mapping[str, Any] | None, current: Mapping[str, Any], *, what: str, source: str, allow: bool
) -> dict[str, Any] | None:
    """Refuse (or, when allowed, report) features that differ from the ones a run recorded.

    Args:
        recorded: the ``provenance`` record saved by the run (None: an older run without one).
        current: :func:`feature_record` of the features in use now.
        what: ``"--resume"`` or ``"--eval-only"``, for the message.
        source: the file the record was read from, for the message.
        allow: ``--allow-feature-change`` was given.

    Returns:
        ``{"previous_fingerprint", "previous_dir"}`` when the features changed and that was allowed
        (the caller records it), else None.

    Raises:
        FeatureChangeError: the fingerprints differ and ``allow`` is False.
    """
    features = (recorded or {}).get("features")
    if not features or "fingerprint" not in features:
        log.warning("%s: %s records no feature fingerprint (older run); the features cannot be checked",
                    what, source)
        return None
    if features["fingerprint"] == current["fingerprint"]:
        if features.get("dir") != current["dir"]:
            log.info("%s: the features moved from %s to %s (same content)", what, features.get("dir"),
                     current["dir"])
        return None
    message = (
        f"{what}: the features differ from the ones recorded in {source}: recorded {features.get('dir')} "
        f"({features['fingerprint'][:19]}..., {features.get('feature_set')}), now {current['dir']} "
        f"({current['fingerprint'][:19]}..., {current['feature_set']})"
    )
    if not allow:
        raise FeatureChangeError(
            message + "; use the run's features, or pass --allow-feature-change to proceed (recorded)"
        )
    log.warning("%s; allowed by --allow-feature-change and recorded in metrics.json", message)
    return {"previous_fingerprint": features["fingerprint"], "previous_dir": features.get("dir")}


def describe(record: Mapping[str, Any]) -> list[str]:
    """Log lines for ``train.log``: features (dir, fingerprint, set, weights) and GloVe coverage."""
    f = record["features"]
    imported = (f.get("provenance") or {}).get("imported")
    weights = "RANDOM" if f["random_weights"] else "pretrained"
    origin = (f"imported from {imported.get('format')}, {imported.get('features')}" if imported
              else f"backbone weights {weights}")
    lines = [
        f"features: {f['dir']} ({f['feature_set']}, {f['videos']} videos, fingerprint {f['fingerprint']}, "
        f"{origin})"
    ]
    g = record.get("glove")
    if record.get("text_encoder") is not None:
        lines.append("GloVe: not used (the questions are read by the transformer text encoder)")
    elif g is not None:
        lines.append(f"GloVe: {g['found']}/{g['words']} vocabulary words found ({100 * g['coverage']:.1f}%) "
                     f"in {g['file']}")
    else:
        lines.append("GloVe: none (word embeddings initialised randomly)")
    if record.get("precision"):
        lines.append(f"precision: {record['precision']} (train.amp resolved for this device)")
    t = record.get("text_encoder")
    if t is not None:
        lines.append(f"text encoder: {t['dir']} ({t.get('model_type')}, {len(t['files'])} files, fingerprint "
                     f"{t['fingerprint']})")
    return lines


def self_contained_meta(
    feature_stats: Mapping[str, tuple[np.ndarray, np.ndarray]] | None,
    max_question_len: int | None,
    feature_projection: Mapping[str, tuple[np.ndarray, np.ndarray]] | None = None,
    query_parse: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """What a checkpoint's ``meta`` carries besides the run's record so that it answers questions alone.

    With the rest of ``meta`` (model name and config, task and task type, answer and question
    vocabularies, training config, this provenance record with the feature set's resolved options and
    backbones' weights sha256 or ``"random"``) a checkpoint is enough for ``vqa-answer``
    (``train/tools/answer/``): the word vectors actually used are the question encoder's embedding table in
    ``model`` (GloVe-initialised and trained, or random), so no GloVe file is needed.

    Returns:
        ``checkpoint_format`` (:data:`CHECKPOINT_FORMAT`); ``feature_stats``: ``{feature: {"mean": (D,),
        "std": (D,)}}`` float32 tensors of ``train.feature_norm=standardize`` (empty: features used as
        extracted); ``backbone_random_seed``: the seed random-weight backbones were initialised from
        (``extract.backbones.RANDOM_SEED``), so their features can be recomputed; ``max_question_len``;
        ``feature_projection``: ``{feature: {"mean": (D,), "components": (D, k)}}`` float32 tensors of
        the fitted PCA of moment runs (``moment.pca_dim``; ``train.moments.Projection``, empty: none),
        applied after the standardisation; ``query_parse`` (moment runs, else absent): ``{"parser": the
        ``pipelines.deps`` parser identity (``"chain"``, ``"spacy:<model>@..."`` or ``"file:<sha256>"``
        for stored parses), "labels": {dependency label: id}}``, so a new query gets its edges the way
        the training queries did. Tensors and plain values only (``torch.load(weights_only=True)``).
    """
    stats = {
        key: {"mean": torch.from_numpy(np.array(mean, dtype=np.float32)),
              "std": torch.from_numpy(np.array(std, dtype=np.float32))}
        for key, (mean, std) in (feature_stats or {}).items()
    }
    return {
        "checkpoint_format": CHECKPOINT_FORMAT,
        "feature_stats": stats,
        "backbone_random_seed": RANDOM_SEED,
        "max_question_len": max_question_len,
        "feature_projection": {
            key: {"mean": torch.from_numpy(np.array(mean, dtype=np.float32)),
                  "components": torch.from_numpy(np.array(comp, dtype=np.float32))}
            for key, (mean, comp) in (feature_projection or {}).items()
        },
        **({"query_parse": {"parser": str(query_parse["parser"]),
                            "labels": {str(k): int(v) for k, v in query_parse["labels"].items()}}}
           if query_parse is not None else {}),
    }
