"""One training run end to end: data, model, the loop and its hooks, selection on val, test, outputs.

:func:`run` is what ``vqa-train`` calls after validating the configs; tests call it directly (also
in spawned processes for DDP). The run directory::

    RUN/
      config.yaml                 # the effective config (model, dataset, paths, train.*, model.*)
      train.log                   # the log of the main process
      text_cache/                 # prepare_qa cache (vocabularies, encoded splits)
      checkpoints/epoch-NNNN.pt   # after every epoch (the newest train.keep_checkpoints kept)
      checkpoints/best.pt         # model weights of the best validation epoch
      tensorboard/                # TensorBoard event files
      metrics.jsonl               # one JSON line per epoch (train losses, val metrics, lr, time)
      metrics.json                # at the end: val and test of the best checkpoint, its path, baselines
      predictions_test.jsonl      # qid, video_id, qtype, prediction, answer, correct / squared error
      predictions_test.csv        # the same as CSV (moment retrieval: top-5 moments, ground truth, IoUs)
      feature_cache/              # moment retrieval: the PCA projection fitted on the training split;
                                  # verified-shards.json: the feature shards whose sha256 was checked
      .vqa-train.lock             # flock held while a process trains or evaluates here
      eval-NAME/                  # --eval-only with --out set to a training run: eval_config.yaml,
                                  # metrics.json, predictions (the run's own files are never touched)

The run's provenance record (``train/provenance.py``: feature directory, its fingerprint and
provenance, random-weight flag, GloVe coverage) goes into config.yaml, every checkpoint, metrics.json
and train.log; ``--resume`` and ``--eval-only`` on other features are refused unless
``allow_feature_change``.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import json
import logging
import math
import random
import sys
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler

from extract.reader import FeatureReader
from models import get_model
from pipelines.atomic import DirectoryInUseError, atomic_path, directory_lock, write_json_atomic
from pipelines.datasets import get_dataset
from pipelines.deps import dependency_edges
from pipelines.official_text import TEXT_RULES, encode_official
from pipelines.text import prepare_moments, prepare_qa
from pipelines.version import toolkit_version
from train.checkpoint import (
    CheckpointError,
    check_best,
    latest_checkpoint,
    load_checkpoint,
    model_digest,
    restore_best,
    restore_rng_state,
)
from train.config import EVAL_MODEL_KEYS, ConfigError, TrainConfig, build_config, config_to_dict
from train.data import (
    FeatureMismatchError,
    QACollate,
    QADataset,
    check_feature_set,
    feature_statistics,
    find_missing_videos,
    seed_worker,
    segments_after_video,
)
from train.distributed import (
    DistInfo,
    ShardedEvalSampler,
    barrier,
    cleanup_distributed,
    init_distributed,
)
from train.loop import (
    CheckpointHook,
    EarlyStoppingHook,
    EvalHook,
    LRSchedulerHook,
    MetricsLogHook,
    Trainer,
    TrainState,
    evaluate,
)
from train.losses import (
    COUNT_MAX,
    COUNT_MIN,
    MOMENT_PROTOCOLS,
    PredictionRecord,
    compute_losses,
    moment_metrics,
    moment_records,
    selection_metric,
)
from train.moments import (
    MomentCollate,
    MomentConfig,
    MomentDataset,
    best_prior_moments,
    checkpoint_configs,
    dependency_label_index,
    load_or_fit_pca,
    random_moments,
    upgrade_sections,
)
from train.provenance import (
    RANDOM_WEIGHTS_BANNER,
    build_record,
    check_features,
    check_precision,
    describe,
    feature_record,
    recorded_precision,
    self_contained_meta,
    train_precision,
)
from train.text_encoder import (
    LoadedTextEncoder,
    check_text_encoder,
    encode_questions,
    load_text_encoder,
    uses_text_encoder,
)

__all__ = [
    "EVAL_RUNTIME_KEYS",
    "RESUMABLE_KEYS",
    "RunInUseError",
    "RunSpec",
    "build_optimizer",
    "build_scheduler",
    "eval_train_config",
    "fill_from_features",
    "resolve_device",
    "run",
    "seed_everything",
]

log = logging.getLogger("train")

#: train.* keys that may change when a run is resumed (everything else must match the saved config)
RESUMABLE_KEYS = frozenset({"epochs", "num_workers", "log_every", "patience", "keep_checkpoints",
                            "glove_warn_coverage", "allow_zero_glove_coverage"})
#: train.* keys an evaluation may set differently from the checkpoint's training config (they do not change
#: the results); every other key is taken from the checkpoint, and a contradicting value is refused
EVAL_RUNTIME_KEYS = RESUMABLE_KEYS | {"batch_size", "eval_batch_size", "ddp_find_unused_parameters",
                                      "moment_nms", "moment_iou"}  # evaluation choices, not training
LOCK_NAME = ".vqa-train.lock"


class RunInUseError(DirectoryInUseError):
    """Another vqa-train process trains or evaluates in the same directory."""


@dataclass(frozen=True)
class RunSpec:
    """Everything a run needs, already validated.

    Attributes:
        model: the MODELS key (``"mspan"``).
        dataset: the DATASETS key; ``task`` its task or None.
        root: dataset root; ``features``: feature directory; ``out``: run directory.
        train: the training config; ``model_config``: the model's config dataclass instance.
        moment: moment retrieval's data and loss settings (``train.moments.MomentConfig``; None: the
            defaults); ``--eval-only`` takes the checkpoint's.
        glove: GloVe file for the question embeddings, or None (random init).
        device: ``"auto"``, ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.
        resume: continue from the newest checkpoint in ``out/checkpoints``.
        eval_only: evaluate ``checkpoint`` on val and test without training.
        checkpoint: a checkpoint file (eval-only).
        allow_missing_features: drop questions whose video has no features (counted in the log)
            instead of stopping.
        show_progress: tqdm bars.
        threads: torch CPU threads of this process (None: leave torch's setting); logged.
        allow_feature_change: resume or evaluate on features whose fingerprint differs from the run's
            record (the change is recorded in metrics.json) instead of stopping.
        eval_name: ``--eval-only`` into a training run's directory writes to ``out/eval-<eval_name>``
            (default: the checkpoint's file stem, e.g. ``eval-best``).
    """

    model: str
    dataset: str
    task: str | None
    root: Path
    features: Path
    out: Path
    train: TrainConfig
    model_config: Any
    moment: Any = None
    glove: Path | None = None
    device: str = "auto"
    resume: bool = False
    eval_only: bool = False
    checkpoint: Path | None = None
    allow_missing_features: bool = False
    show_progress: bool = True
    threads: int | None = None
    allow_feature_change: bool = False
    eval_name: str | None = None


def resolve_device(device: str, dist: DistInfo | None = None) -> torch.device:
    """``auto`` -> CUDA when available else CPU; under DDP on CUDA, ``cuda:LOCAL_RANK``."""
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ConfigError(f"--device {device}: CUDA is not available on this machine; use --device cpu")
        if dist is not None and dist.distributed:
            return torch.device("cuda", dist.local_rank)
    return torch.device(device)


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (CPU and CUDA); cuDNN in deterministic mode."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)
    torch.backends.cudnn.benchmark = False
    torch.backends.cudnn.deterministic = True


def fill_from_features(config_cls: type, values: dict[str, Any], outputs: dict[str, Any]) -> dict[str, Any]:
    """Fill a model config's input sizes from the feature directory unless they were set explicitly.

    Convention: a field ``<feature>_dim`` takes the last dimension of feature ``<feature>``, and
    ``num_frames`` the (fixed) leading dimension of the first feature that has one.

    Args:
        config_cls: the model's config dataclass.
        values: the explicitly set model keys (not modified).
        outputs: ``FeatureReader.outputs`` (name -> spec with ``shape``).

    Returns:
        ``values`` plus the filled sizes.

    Raises:
        ConfigError: an explicit size that contradicts the features.
    """
    fields = set(config_cls.__dataclass_fields__)
    out = dict(values)
    for name, spec in outputs.items():
        key = f"{name}_dim"
        if key in fields and spec.shape:
            dim = spec.shape[-1]
            if key in values and values[key] != dim:
                raise ConfigError(
                    f"model.{key}={values[key]} but the features' {name!r} have size {dim}; drop the setting "
                    f"or use matching features"
                )
            out[key] = dim
    if "num_frames" in fields:
        fixed = [s.shape[0] for n, s in outputs.items() if f"{n}_dim" in fields and s.shape and s.shape[0]]
        if fixed:
            if "num_frames" in values and values["num_frames"] != fixed[0]:
                raise ConfigError(
                    f"model.num_frames={values['num_frames']} but the features hold {fixed[0]} frames "
                    f"per video"
                )
            out["num_frames"] = fixed[0]
    return out


def build_optimizer(model: torch.nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    """Adam (MSPAN's), AdamW or SGD over the trainable parameters."""
    params = [p for p in model.parameters() if p.requires_grad]
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: TrainConfig):
    """The epoch-wise schedule: StepLR(step_size, gamma), MultiStepLR(milestones, gamma) or None; or the
    per-update ``inverse_sqrt`` (CMIN's): linear warm-up from ``warmup_init_lr`` to ``lr`` over
    ``warmup_updates`` updates, then ``lr * sqrt(warmup_updates / update)``."""
    if cfg.scheduler == "inverse_sqrt":
        w, start = cfg.warmup_updates, cfg.warmup_init_lr / cfg.lr

        def factor(step: int) -> float:
            if step < w:
                return start + (1.0 - start) * step / w
            return math.sqrt(max(w, 1) / max(step, 1))

        return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
    if cfg.scheduler == "step":
        return torch.optim.lr_scheduler.StepLR(optimizer, step_size=cfg.step_size, gamma=cfg.gamma)
    if cfg.scheduler == "multistep":
        return torch.optim.lr_scheduler.MultiStepLR(
            optimizer, milestones=list(cfg.milestones), gamma=cfg.gamma
        )
    return None


def eval_train_config(saved: Mapping[str, Any], explicit: Mapping[str, Any], *, source: str) -> TrainConfig:
    """The training config of an evaluation: the checkpoint's, with only :data:`EVAL_RUNTIME_KEYS` changed.

    Args:
        saved: the checkpoint's ``train`` values (``meta["train_config"]``).
        explicit: train.* values the user set for the evaluation (``--config``, ``--set``, flags).
        source: the checkpoint path, for the message.

    Raises:
        ConfigError: an explicit value that contradicts the checkpoint on a key that changes results.
    """
    base = config_to_dict(build_config(TrainConfig, dict(saved), section="train"))
    wanted = config_to_dict(build_config(TrainConfig, {**base, **explicit}, section="train"))
    diffs = [f"train.{k}={wanted[k]!r} (checkpoint: {base[k]!r})" for k in sorted(explicit)
             if k not in EVAL_RUNTIME_KEYS and wanted[k] != base[k]]
    if diffs:
        raise ConfigError(
            f"--eval-only takes the training settings from {source}; these contradict it: "
            f"{'; '.join(diffs)}. Drop them (only train.{{{', '.join(sorted(EVAL_RUNTIME_KEYS))}}} "
            "may be set)"
        )
    runtime = {k: v for k, v in explicit.items() if k in EVAL_RUNTIME_KEYS}
    return build_config(TrainConfig, {**base, **runtime}, section="train")


def eval_out_dir(spec: RunSpec) -> Path:
    """Where a run writes: ``out``, or ``out/eval-<name>`` when evaluating into a training run's directory."""
    out = Path(spec.out)
    if not spec.eval_only:
        return out
    if (out / "config.yaml").exists() or (out / "checkpoints").is_dir() or (out / "metrics.jsonl").exists():
        name = spec.eval_name or (Path(spec.checkpoint).stem if spec.checkpoint else "checkpoint")
        return out / f"eval-{name}"
    return out


def effective_config(spec: RunSpec, task_type: str) -> dict[str, Any]:
    """The run's configuration as saved in ``config.yaml``."""
    return {
        "model_name": spec.model,
        "dataset": spec.dataset,
        "task": spec.task,
        "task_type": task_type,
        "root": str(spec.root),
        "features": str(spec.features),
        "glove": str(spec.glove) if spec.glove else None,
        "toolkit_version": toolkit_version(),
        "train": config_to_dict(spec.train),
        "model": config_to_dict(spec.model_config),
        **({"moment": config_to_dict(spec.moment or MomentConfig())} if task_type == "moment" else {}),
    }


def _write_yaml(path: Path, obj: dict[str, Any]) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(yaml.safe_dump(obj, sort_keys=False), encoding="utf-8")


class _RunLogHandler(logging.FileHandler):
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


def _attach_log_file(path: Path) -> logging.Handler:
    handler = _RunLogHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    return handler


class _Data:
    """The datasets of one run and what was dropped."""

    def __init__(self) -> None:
        self.datasets: dict[str, QADataset] = {}
        self.dropped: dict[str, dict[str, int]] = {}
        self.feature_stats: dict[str, tuple[np.ndarray, np.ndarray]] | None = None
        self.feature_projection: dict[str, tuple[np.ndarray, np.ndarray]] | None = None  # moment PCA
        self.query_parse: dict[str, Any] | None = None  # moment: dependency parser and label ids


def _recorded_stats(path: Path | None, ckpt: Mapping[str, Any] | None = None) -> dict[str, Any] | None:
    """The ``train.feature_norm=standardize`` statistics a checkpoint was trained with (None: none)."""
    if ckpt is None and path is not None:
        ckpt = load_checkpoint(path)
    stats = ((ckpt or {}).get("meta") or {}).get("feature_stats") or {}
    return {k: (v["mean"].numpy(), v["std"].numpy()) for k, v in stats.items()} or None


def _build_data(spec: RunSpec, adapter: Any, prepared: Any, reader: Any, entry: Any, task_type: str,
                text_encoder: LoadedTextEncoder | None = None, recorded_stats: dict | None = None) -> _Data:
    splits = prepared.splits
    feature_keys = tuple(getattr(entry, "feature_keys", ()) or ()) or None
    data = _Data()
    plan: dict[str, tuple[Any, np.ndarray]] = {}
    if "train" not in splits or "test" not in splits:
        raise FeatureMismatchError(f"{spec.dataset}: needs train and test splits, has {sorted(splits)}")
    train_split = splits["train"]
    n_train = len(train_split.qids)
    if "val" in splits:
        plan["train"] = (train_split, np.arange(n_train))
        plan["val"] = (splits["val"], np.arange(len(splits["val"].qids)))
    else:  # no official validation split: hold out a fixed-seed share of train
        perm = np.random.default_rng(0).permutation(n_train)
        n_val = max(1, int(round(spec.train.val_fraction * n_train)))
        plan["val"] = (train_split, np.sort(perm[:n_val]))
        plan["train"] = (train_split, np.sort(perm[n_val:]))
        log.info("%s has no val split: %d training questions held out for validation", spec.dataset, n_val)
    plan["test"] = (splits["test"], np.arange(len(splits["test"].qids)))

    stats = None
    if spec.train.feature_norm == "standardize" and recorded_stats is not None:
        stats = data.feature_stats = recorded_stats  # --resume / --eval-only: what the checkpoint saw
        log.info("features standardised per channel with the statistics the checkpoint records")
    elif spec.train.feature_norm == "standardize":
        train_split, train_rows = plan["train"]
        keys = feature_keys if feature_keys is not None else tuple(reader.outputs)
        keys = tuple(k for k in keys if not k.endswith("_times"))  # timestamps stay in seconds
        present = [train_split.video_ids[i] for i in train_rows if train_split.video_ids[i] in reader]
        stats = feature_statistics(reader, present, keys)
        log.info("features standardised per channel with the statistics of %d training videos",
                 len(set(present)))
        data.feature_stats = stats
    segments = _segments(adapter, splits)
    texts = _text_tokens(adapter, splits, text_encoder) if text_encoder is not None else {}
    for name, (split, rows) in plan.items():
        dropped: dict[str, int] = {}
        vids = [split.video_ids[i] for i in rows]
        missing = set(find_missing_videos(vids, reader))
        if missing:
            n_q = sum(v in missing for v in vids)
            if not spec.allow_missing_features:
                shown = ", ".join(sorted(missing)[:5])
                raise FeatureMismatchError(
                    f"{spec.features}: {len(missing)} video(s) of the {name} split ({n_q} questions) have no "
                    f"features, e.g. {shown}; extract them, or pass --allow-missing-features to drop those "
                    f"questions"
                )
            rows = np.array([i for i in rows if split.video_ids[i] not in missing], dtype=np.int64)
            dropped["missing_features"] = n_q
            log.warning("%s: dropped %d questions of %d videos without features", name, n_q, len(missing))
        source = next(k for k, v in splits.items() if v is split)
        rows = _drop_segments_after_video(name, split, rows, segments.get(source), reader, dropped)
        if name == "train" and task_type == "open":
            answers = np.asarray(split.answers)
            oov = int((answers[rows] < 0).sum())
            if oov:
                rows = rows[answers[rows] >= 0]
                dropped["answer_out_of_vocabulary"] = oov
                log.info("train: dropped %d questions whose answer is outside the answer vocabulary", oov)
        if len(rows) == 0:
            raise FeatureMismatchError(f"the {name} split has no questions left to use")
        data.datasets[name] = QADataset(
            split, reader, feature_keys=feature_keys, indices=rows, feature_stats=stats,
            segments=segments.get(source), text_tokens=texts.get(source),
        )
        data.dropped[name] = dropped
    return data


def _drop_segments_after_video(name: str, split: Any, rows: np.ndarray, segments: dict | None, reader: Any,
                               dropped: dict[str, int]) -> np.ndarray:
    """Drop (by name, counted) the questions whose segment (How2QA's ``ts``) starts after their video."""
    if not segments or "frame_times" not in reader.outputs:
        return rows
    asked = [(split.qids[i], split.video_ids[i], segments[split.qids[i]]) for i in rows
             if split.qids[i] in segments]
    outside = segments_after_video(asked, reader)
    if not outside:
        return rows
    gone = {qid for qid, *_ in outside}
    shown = "; ".join(f"{q} (video {v}: ts {a:g}-{b:g} s, the video ends by {e:.2f} s)"
                      for q, v, (a, b), e in outside[:3])
    log.warning("%s: dropped %d question(s) whose segment starts after the end of its video, e.g. %s", name,
                len(outside), shown)
    dropped["segment_after_video"] = len(outside)
    return np.array([i for i in rows if split.qids[i] not in gone], dtype=np.int64)


def _prepare_qa(adapter: Any, prep_kwargs: dict[str, Any], dist: DistInfo) -> Any:
    """``prepare_qa`` on the main process first (it writes the cache), then on the others."""
    prepared = prepare_qa(adapter, **prep_kwargs) if dist.is_main else None
    barrier()
    return prepared if dist.is_main else prepare_qa(adapter, **prep_kwargs)


def _segments(adapter: Any, splits: dict[str, Any]) -> dict[str, dict[str, tuple[float, float]]]:
    """Question id -> (start, end) seconds per split, for datasets whose records carry a segment (How2QA)."""
    out: dict[str, dict[str, tuple[float, float]]] = {}
    for name in splits:
        found = {r.qid: tuple(r.segment) for r in adapter.records(name) if getattr(r, "segment", None)}
        if found:
            out[name] = found
    return out


def _text_tokens(adapter: Any, splits: dict[str, Any], text_encoder: LoadedTextEncoder
                 ) -> dict[str, dict[str, dict[str, np.ndarray]]]:
    """Question id -> the transformer question encoder's token arrays, per split (tokenized once); with
    the subtitles when the encoded splits carry them (``prepare_qa(subtitles=True)``)."""
    out = {}
    for name, split in splits.items():
        recs = adapter.records(name)
        subs = [r.subtitle for r in recs] if getattr(split, "subtitles", None) is not None else None
        encoded = encode_questions(text_encoder.tokenizer, [r.question for r in recs],
                                   [r.candidates for r in recs], text_encoder.max_len, subtitles=subs,
                                   subtitle_max_len=text_encoder.subtitle_max_len)
        out[name] = {r.qid: e for r, e in zip(recs, encoded, strict=True)}
    return out


def _load_text_encoder(spec: RunSpec, model_cfg: Any, saved_provenance: Mapping[str, Any] | None,
                       eval_meta: Mapping[str, Any] | None) -> tuple[LoadedTextEncoder | None, Any]:
    """The transformer question encoder of a run (None for GloVe), refused when its directory's files
    differ from the ones the resumed run or the evaluated checkpoint recorded. Returns it and the model
    config (``--eval-only`` may point ``model.text_encoder_path`` at a moved copy)."""
    if not uses_text_encoder(model_cfg):
        return None, model_cfg
    moved = getattr(spec.model_config, "text_encoder_path", None) if spec.eval_only else None
    if moved:
        model_cfg = dataclasses.replace(model_cfg, text_encoder_path=moved)
    loaded = load_text_encoder(model_cfg.text_encoder_path, max_len=model_cfg.text_max_len,
                               subtitle_max_len=getattr(model_cfg, "subtitle_max_len", 64))
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
    return loaded, model_cfg


def _baselines(task_type: str, data: _Data, prepared: Any, cfg: TrainConfig | None = None
               ) -> dict[str, float]:
    """Chance-level references on test: majority answer (open), 1/C (mc), train-mean count (count);
    moment retrieval: a random window and the best prior, with every moment metric."""
    if task_type == "moment":
        return _moment_baselines(data, cfg or TrainConfig())
    tr, te = data.datasets["train"], data.datasets["test"]
    tr_ans = np.asarray(tr.split.answers)[tr.indices]
    te_ans = np.asarray(te.split.answers)[te.indices]
    if task_type == "open":
        majority = Counter(tr_ans.tolist()).most_common(1)[0][0]
        # the most common training answer of each question type (e.g. "what color ..." -> its mode)
        by_type: dict[str, Counter] = {}
        for i, a in zip(tr.indices, tr_ans.tolist(), strict=True):
            by_type.setdefault(tr.split.qtypes[i], Counter())[a] += 1
        te_types = [te.split.qtypes[i] for i in te.indices]
        prior = [by_type[t].most_common(1)[0][0] if t in by_type else majority for t in te_types]
        return {
            "majority_answer_accuracy": float((te_ans == majority).mean()),
            "type_prior_accuracy": float((te_ans == np.asarray(prior)).mean()),
        }
    if task_type == "mc":
        return {"random_choice_accuracy": 1.0 / tr.split.candidates.shape[1]}
    mean = float(tr_ans.mean())
    pred = min(max(round(mean), COUNT_MIN), COUNT_MAX)
    return {"train_mean_mse": float(((pred - te_ans.astype(np.float64)) ** 2).mean())}


def _moment_baselines(data: _Data, cfg: TrainConfig) -> dict[str, float]:
    """``random_window/<metric>`` (5 uniform random windows, seed 0) and ``best_prior/<metric>`` (the
    training split's 5 most frequent normalised moments), evaluated like the model: the same protocol
    (``train.moment_iou``; the listed moments after NMS at ``train.moment_nms``, the official protocol's
    R@5 re-ranking the 5 by its own NMS)."""
    tr, te = data.datasets["train"], data.datasets["test"]
    rows, s = te.indices, te.split
    dur = np.asarray(s.duration_s, dtype=np.float64)[rows]
    gt = torch.as_tensor(np.stack([np.asarray(s.start_s)[rows], np.asarray(s.end_s)[rows]], 1),
                         dtype=torch.float64)
    qids, vids = [s.qids[i] for i in rows], [s.video_ids[i] for i in rows]
    t = tr.split
    prior, freq = best_prior_moments(np.asarray(t.start_s)[tr.indices], np.asarray(t.end_s)[tr.indices],
                                     np.asarray(t.duration_s)[tr.indices])
    from train.losses import nms_top_k

    keep = nms_top_k(torch.as_tensor(prior), torch.as_tensor(freq), threshold=cfg.moment_nms).numpy()
    steps = getattr(te, "num_steps", 200)
    out: dict[str, float] = {}
    for name, moments, scores, listed in (
        ("random_window", random_moments(dur), [np.linspace(1, 0.5, 5)] * len(rows), None),
        ("best_prior", [prior * d for d in dur], [freq] * len(rows), keep),
    ):
        moments = [torch.as_tensor(m, dtype=torch.float64) for m in moments]
        scores = [torch.as_tensor(c, dtype=torch.float64) for c in scores]
        cands = None
        if cfg.moment_iou == "official":  # R@5 ranks all 5 with its own NMS; the steps of each moment
            cands = [(m * steps / d - torch.tensor([0.0, 1.0], dtype=torch.float64), c)
                     for m, c, d in zip(moments, scores, dur, strict=True)]
        if listed is not None:
            moments, scores = [m[listed] for m in moments], [c[listed] for c in scores]
        recs = moment_records(qids, vids, moments, scores, gt, torch.as_tensor(dur), iou=cfg.moment_iou,
                              num_steps=steps, candidates=cands)
        for k, v in moment_metrics(recs).items():
            if k != "num_questions":
                out[f"{name}/{k}"] = v
    return out


def _loader(ds: QADataset, *, batch_size: int, sampler: Any, collate: QACollate, cfg: TrainConfig,
            pin: bool, generator: torch.Generator | None = None) -> DataLoader:
    return DataLoader(
        ds,
        batch_size=batch_size,
        sampler=sampler,
        collate_fn=collate,
        num_workers=cfg.num_workers,
        pin_memory=pin,
        worker_init_fn=seed_worker,
        generator=generator,
        drop_last=False,
    )


def _write_moment_predictions(out: Path, split: str, records: Sequence[PredictionRecord]) -> None:
    """Per query: its top-5 moments ``[start_s, end_s, score]`` (best first), the ground truth, the IoU of
    each moment and of the top one."""
    rows = [{"qid": r.qid, "video_id": r.video_id, "prediction": r.prediction, "answer": r.answer,
             "ious": [round(v, 4) for v in (r.ious or ())], "iou": round(r.score, 4)} for r in records]
    with atomic_path(out / f"predictions_{split}.jsonl") as tmp:
        tmp.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    header = ["qid", "video_id", "gt_start", "gt_end", "iou"]
    for k in range(1, 6):
        header += [f"start_{k}", f"end_{k}", f"score_{k}", f"iou_{k}"]
    with atomic_path(out / f"predictions_{split}.csv") as tmp:
        with open(tmp, "w", encoding="utf-8", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(header)
            for r in rows:
                line = [r["qid"], r["video_id"], *r["answer"], r["iou"]]
                for k in range(5):
                    pred = r["prediction"][k] if k < len(r["prediction"]) else ["", "", ""]
                    line += [*pred, r["ious"][k] if k < len(r["ious"]) else ""]
                w.writerow(line)


def _write_predictions(out: Path, split: str, records: Sequence[PredictionRecord], task_type: str) -> None:
    if task_type == "moment":
        _write_moment_predictions(out, split, records)
        return
    score_name = "squared_error" if task_type == "count" else "correct"
    rows = []
    for r in records:
        row = {"qid": r.qid, "video_id": r.video_id, "qtype": r.qtype, "prediction": r.prediction,
               "answer": r.answer}
        if r.raw is not None:
            row["raw_prediction"] = r.raw
        row[score_name] = r.score if task_type == "count" else bool(r.score)
        rows.append(row)
    with atomic_path(out / f"predictions_{split}.jsonl") as tmp:
        tmp.write_text("".join(json.dumps(r, sort_keys=False) + "\n" for r in rows), encoding="utf-8")
    header = ["qid", "video_id", "qtype", "prediction", "answer"]
    header += ["raw_prediction"] if task_type == "count" else []
    header += [score_name]
    with atomic_path(out / f"predictions_{split}.csv") as tmp:
        with open(tmp, "w", encoding="utf-8", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=header)
            w.writeheader()
            w.writerows(rows)


def _check_resume_config(saved: dict[str, Any], current: dict[str, Any], path: Path) -> None:
    diffs = []
    for key in ("model_name", "dataset", "task"):
        if saved.get(key) != current.get(key):
            diffs.append(f"{key}: {saved.get(key)!r} -> {current.get(key)!r}")
    saved = upgrade_sections(saved, source=str(path)) if current.get("task_type") == "moment" else saved
    for section in ("train", "model", "moment"):
        a, b = saved.get(section) or {}, current.get(section) or {}
        for k in sorted(set(a) | set(b)):
            if section == "train" and (k in RESUMABLE_KEYS or k == "amp"):
                continue  # amp: its resolved precision is compared (check_precision)
            if section == "model" and k == "text_encoder_path":  # may move: its files' sha256 are checked
                continue
            if a.get(k) != b.get(k):
                diffs.append(f"{section}.{k}: {a.get(k)!r} -> {b.get(k)!r}")
    if diffs:
        raise ConfigError(
            f"--resume: the config differs from the run's saved {path}: " + "; ".join(diffs)
            + f". Only train.{{{', '.join(sorted(RESUMABLE_KEYS))}}} may change on resume; use a new --out"
        )


def _prepare_moments_data(spec: RunSpec, adapter: Any, reader: Any, dist: DistInfo, mc: MomentConfig
                          ) -> tuple[Any, _Data]:
    """Queries, dependency edges, the PCA projection and the three splits of a moment-retrieval run.

    ActivityNet Captions: train / val (val_1, model selection) / test (val_2); TACoS: train / val / test.
    Edges: the stored parses of the official ``*_gcn.json`` files when the adapter read those, else
    spaCy when installed, else the chain fallback (``pipelines.deps``).
    """
    cfg = spec.train
    cache = spec.out / "text_cache"

    def prepare() -> tuple[Any, Any]:
        prepared = prepare_moments(adapter, cache_dir=cache, glove=spec.glove,
                                   max_query_len=cfg.max_question_len)
        stored = adapter.stored_parses(cache) if hasattr(adapter, "stored_parses") else None
        return prepared, dependency_edges(adapter, cache_dir=cache, parsed=stored)

    if dist.is_main:
        prepared, parsed = prepare()
    barrier()
    if not dist.is_main:
        prepared, parsed = prepare()
    log.info("dependency edges: %s", parsed.parser)
    splits = prepared.splits
    if not {"train", "val", "test"} <= set(splits):
        raise FeatureMismatchError(f"{spec.dataset}: needs train, val and test splits, has {sorted(splits)}")
    labels = dependency_label_index(parsed.edges["train"], getattr(spec.model_config, "num_dep_labels", 40))
    data = _Data()
    data.query_parse = {"parser": parsed.parser, "labels": labels}  # carried by checkpoints
    rows: dict[str, np.ndarray] = {}
    for name in ("train", "val", "test"):
        split = splits[name]
        r = np.arange(len(split))
        missing = set(find_missing_videos(split.video_ids, reader))
        if missing:
            n_q = sum(v in missing for v in split.video_ids)
            if not spec.allow_missing_features:
                raise FeatureMismatchError(
                    f"{spec.features}: {len(missing)} video(s) of the {name} split ({n_q} queries) have no "
                    f"features, e.g. {', '.join(sorted(missing)[:5])}; extract them, or pass "
                    f"--allow-missing-features to drop those queries")
            r = np.array([i for i in r if split.video_ids[i] not in missing], dtype=np.int64)
            log.warning("%s: dropped %d queries of %d videos without features", name, n_q, len(missing))
        if len(r) == 0:
            raise FeatureMismatchError(f"the {name} split has no queries left to use")
        rows[name] = r
        data.dropped[name] = {"missing_features": len(split) - len(r)} if missing else {}
    train_vids = [splits["train"].video_ids[i] for i in rows["train"]]
    stats = None
    if cfg.feature_norm == "standardize":
        stats = feature_statistics(reader, train_vids, ("clips",))["clips"]
        data.feature_stats = {"clips": stats}  # carried by checkpoints (self_contained_meta)
    projection = None
    if mc.pca_dim is not None:
        if dist.is_main:
            projection = load_or_fit_pca(reader, train_vids, mc.pca_dim, cache_dir=spec.out / "feature_cache",
                                         stats=stats, whiten=mc.pca_whiten, center=mc.center_clips)
        barrier()
        if not dist.is_main:
            projection = load_or_fit_pca(reader, train_vids, mc.pca_dim, cache_dir=spec.out / "feature_cache",
                                         stats=stats, whiten=mc.pca_whiten, center=mc.center_clips)
        data.feature_projection = {"clips": (projection.mean, projection.components)}  # in checkpoints
    for name in ("train", "val", "test"):
        data.datasets[name] = MomentDataset(
            splits[name], parsed.edges[name], labels, reader, num_steps=mc.num_steps, resample=mc.resample,
            projection=projection, feature_stats=stats, center=mc.center_clips, indices=rows[name])
        data.datasets[name].num_steps = mc.num_steps
    return prepared, data


def run(spec: RunSpec) -> dict[str, Any]:
    """Train (or evaluate) one model on one dataset; see the module docstring for the outputs.

    Returns:
        The content of ``metrics.json``.

    Raises:
        ConfigError, FeatureMismatchError, CheckpointError: bad input, with a message saying what to do.
        train.loop.NonFiniteLossError: the loss became NaN/inf (names the epoch and step).
    """
    dist = init_distributed("cuda" if spec.device.startswith("cuda") or (
        spec.device == "auto" and torch.cuda.is_available()) else "cpu")
    handler = None
    writer = None
    stack = contextlib.ExitStack()
    try:
        device = resolve_device(spec.device, dist)
        out = eval_out_dir(spec)
        if dist.is_main:
            stack.enter_context(directory_lock(
                out, LOCK_NAME, error=RunInUseError,
                message=f"{out} is in use by another vqa-train process; wait for it or choose another --out",
            ))
            handler = _attach_log_file(out / "train.log")
        if spec.threads:
            torch.set_num_threads(spec.threads)
        log.info("torch CPU threads: %d per process", torch.get_num_threads())
        barrier()
        entry = get_model(spec.model)
        adapter = get_dataset(spec.dataset)(spec.root, task=spec.task)
        task_type = adapter.task_type
        if task_type not in entry.task_types:
            raise ConfigError(
                f"model {spec.model!r} supports task types {entry.task_types}, but {spec.dataset}"
                f"{'/' + spec.task if spec.task else ''} is {task_type!r}"
            )
        reader = FeatureReader(spec.features)
        check_feature_set(reader, entry.feature_set, model=spec.model)
        reader.check_readable()  # here, not in a DataLoader worker (--num-workers > 0)
        reader.verify_checksums(out / "feature_cache" / "verified-shards.json")  # what the fingerprint says
        features = feature_record(spec.features, reader)
        if features["random_weights"]:
            for line in RANDOM_WEIGHTS_BANNER.splitlines():
                log.warning(line)
        feature_change = None

        cfg = spec.train
        precision = train_precision(cfg.amp, device)
        conf = effective_config(spec, task_type)
        ckpt_dir = out / "checkpoints"
        resume_from = None
        saved_provenance = None
        if not spec.resume and not spec.eval_only and latest_checkpoint(ckpt_dir) is not None:
            raise ConfigError(
                f"{out} already holds a run ({latest_checkpoint(ckpt_dir).name}); pass --resume to "
                f"continue it or choose a new --out"
            )
        if spec.resume and not spec.eval_only:
            resume_from = latest_checkpoint(ckpt_dir)
            if (out / "config.yaml").exists():
                saved = yaml.safe_load((out / "config.yaml").read_text(encoding="utf-8"))
                _check_resume_config(saved, conf, out / "config.yaml")
                saved_provenance = saved.get("provenance") or {}
                check_precision(saved.get("provenance"), (saved.get("train") or {}).get("amp", "bf16"),
                                cfg.amp, precision, device=device, source=str(out / "config.yaml"))
                feature_change = check_features(
                    saved.get("provenance"), features, what="--resume", source=str(out / "config.yaml"),
                    allow=spec.allow_feature_change,
                )
            if resume_from is None:
                log.warning("--resume: no checkpoint in %s; starting from scratch", ckpt_dir)
        vocab_size_cfg = cfg.answer_vocab_size if cfg.answer_vocab_size is not None else "default"
        prep_kwargs = dict(cache_dir=out / "text_cache", answer_vocab_size=vocab_size_cfg,
                           glove=spec.glove, max_question_len=cfg.max_question_len,
                           subtitles=bool(getattr(spec.model_config, "use_subtitles", False)))
        moment_cfg = _moment_config(spec) if task_type == "moment" else None
        if moment_cfg is not None:
            prepared, data = _prepare_moments_data(spec, adapter, reader, dist, moment_cfg)
        else:
            prepared = _prepare_qa(adapter, prep_kwargs, dist)
        question_vocab = list(prepared.query_vocab if task_type == "moment" else prepared.question_vocab)
        answer_vocab = list(prepared.answer_vocab) if task_type == "open" else None
        model_cfg = spec.model_config
        eval_ckpt = None
        text_rule = None
        if spec.eval_only:
            if spec.checkpoint is None:
                raise ConfigError("--eval-only needs --checkpoint PATH")
            eval_ckpt = load_checkpoint(spec.checkpoint)
            meta = eval_ckpt.get("meta", {})
            if meta.get("model_name") != spec.model:
                raise CheckpointError(
                    f"{spec.checkpoint}: a checkpoint of model {meta.get('model_name')!r}, not {spec.model!r}"
                )
            model_values = checkpoint_configs(meta, source=str(spec.checkpoint))[0]
            model_cfg = build_config(entry.config_cls, model_values, section="model")
            model_cfg = dataclasses.replace(model_cfg, **{  # inference-only settings of this evaluation
                k: getattr(spec.model_config, k) for k in EVAL_MODEL_KEYS if hasattr(model_cfg, k)})
            if task_type != "moment" and bool(meta.get("subtitles")) != prep_kwargs["subtitles"]:
                prep_kwargs["subtitles"] = bool(meta.get("subtitles"))  # read as the checkpoint was trained
                prepared = _prepare_qa(adapter, prep_kwargs, dist)
                question_vocab = list(prepared.question_vocab)
            feature_change = check_features(meta.get("provenance"), features, what="--eval-only",
                                            source=str(spec.checkpoint), allow=spec.allow_feature_change)
            if "converted_from" in meta:  # a released checkpoint: the official vocabularies and tokens
                prepared = _official_text(spec, adapter, meta, task_type)
                text_rule = meta["text_rule"]
                question_vocab = list(prepared.question_vocab)
                answer_vocab = list(prepared.answer_vocab) if task_type == "open" else None
            _check_eval_meta(meta, spec, question_vocab)
            precision = recorded_precision(meta.get("provenance"), cfg.amp, device)  # as it was validated
            if meta.get("answer_vocab") is not None and meta["answer_vocab"] != (answer_vocab or []):
                raise CheckpointError(
                    f"{spec.checkpoint}: its answer vocabulary ({len(meta['answer_vocab'])} answers) differs "
                    f"from this dataset's ({len(answer_vocab or [])}); use the same dataset, task and "
                    f"train.answer_vocab_size as the training run"
                )
        text_enc, model_cfg = _load_text_encoder(spec, model_cfg, saved_provenance,
                                                 eval_ckpt.get("meta", {}) if eval_ckpt is not None else None)
        _check_glove(prepared.glove, cfg)
        record = build_record(features, prepared.glove, precision, text_enc.record if text_enc else None)
        for line in describe(record):
            log.info(line)
        conf["provenance"] = record
        if dist.is_main:
            _write_yaml(out / ("eval_config.yaml" if spec.eval_only else "config.yaml"), conf)
        if task_type != "moment":
            data = _build_data(spec, adapter, prepared, reader, entry, task_type, text_enc,
                               recorded_stats=_recorded_stats(resume_from, eval_ckpt))
        for name, ds in data.datasets.items():
            log.info("%s: %d questions", name, len(ds))

        ragged = tuple(n for n, s in reader.outputs.items() if s.ragged)
        collate = QACollate(ragged, answer_dtype=torch.float32 if task_type == "count" else torch.int64)
        if task_type == "moment":
            collate = MomentCollate()
        pin = device.type == "cuda"

        seed_everything(cfg.seed)
        embeddings = prepared.embeddings
        model = entry.build(
            model_cfg,
            vocab_size=len(question_vocab),
            num_answers=len(answer_vocab or []),
            task_type=task_type,
            embeddings=embeddings,
            **({"text_encoder": text_enc.model} if text_enc is not None else {}),
        ).to(device)
        if dist.rank > 0:  # different dropout streams per process; rank 0 keeps the single-process stream
            seed_everything(cfg.seed + 1_000_003 * dist.rank)
        meta = {
            "model_name": spec.model,
            "task_type": task_type,
            "model_config": json.dumps(config_to_dict(model_cfg), sort_keys=True),
            "train_config": json.dumps(config_to_dict(cfg), sort_keys=True),
            "answer_vocab": answer_vocab or [],
            "question_vocab": question_vocab,
            "dataset": spec.dataset,
            "task": spec.task,
            "provenance": record,
            "toolkit_version": toolkit_version(),
            "subtitles": any(getattr(sp, "subtitles", None) is not None for sp in prepared.splits.values()),
            **self_contained_meta(data.feature_stats, cfg.max_question_len, data.feature_projection,
                                  data.query_parse),
        }
        if moment_cfg is not None:  # the clips' view and the loss (vqa-answer and --eval-only read it)
            meta["moment_config"] = json.dumps(config_to_dict(moment_cfg), sort_keys=True)
        metric, mode = selection_metric(task_type)

        eval_bs = cfg.effective_eval_batch_size
        eval_loaders = {
            name: _loader(data.datasets[name], batch_size=eval_bs, collate=collate, cfg=cfg, pin=pin,
                          sampler=ShardedEvalSampler(len(data.datasets[name]), rank=dist.rank,
                                                     world_size=dist.world_size))
            for name in ("val", "test")
        }

        moment_opts = ({"nms_threshold": cfg.moment_nms, "iou": cfg.moment_iou} if task_type == "moment"
                       else None)

        def run_eval(split: str) -> tuple[dict[str, float], list[PredictionRecord]]:
            return evaluate(
                model, eval_loaders[split], task_type=task_type, device=device, amp=precision,
                answer_vocab=answer_vocab, order=data.datasets[split].qids,
                show_progress=spec.show_progress and dist.is_main, desc=split, moment=moment_opts,
            )

        state = TrainState()
        best_path = ckpt_dir / "best.pt"
        if spec.eval_only:
            model.load_state_dict(eval_ckpt["model"])
            best_path = Path(spec.checkpoint)
            state = TrainState.from_dict(eval_ckpt["state"]) if "state" in eval_ckpt else state
        else:
            if cfg.batch_size % dist.world_size:
                raise ConfigError(
                    f"train.batch_size={cfg.batch_size} is the global batch; it must be divisible by the "
                    f"number of processes ({dist.world_size})"
                )
            optimizer = build_optimizer(model, cfg)
            scheduler = build_scheduler(optimizer, cfg)
            ddp_model: torch.nn.Module = model
            if dist.distributed:
                ddp_model = DistributedDataParallel(
                    model, device_ids=[dist.local_rank] if device.type == "cuda" else None,
                    find_unused_parameters=cfg.ddp_find_unused_parameters,
                )
            train_ds = data.datasets["train"]
            sampler = DistributedSampler(train_ds, num_replicas=dist.world_size, rank=dist.rank,
                                         shuffle=True, seed=cfg.seed, drop_last=False)
            gen = torch.Generator()
            train_loader = _loader(train_ds, batch_size=cfg.batch_size // dist.world_size, sampler=sampler,
                                   collate=collate, cfg=cfg, pin=pin, generator=gen)
            if dist.is_main:
                from torch.utils.tensorboard import SummaryWriter

                writer = SummaryWriter(str(out / "tensorboard"))
            hooks = [
                LRSchedulerHook(scheduler, per_step=cfg.scheduler == "inverse_sqrt"),
                EvalHook(lambda: run_eval("val")[0], metric=metric, mode=mode),
                MetricsLogHook(out / "metrics.jsonl", writer, log_every=cfg.log_every, enabled=dist.is_main),
                CheckpointHook(ckpt_dir, model=model, scheduler=scheduler, meta=meta,
                               keep=cfg.keep_checkpoints, is_main=dist.is_main),
                EarlyStoppingHook(cfg.patience),
            ]
            trainer = Trainer(
                ddp_model, optimizer, train_loader, task_type=task_type, device=device, amp=precision,
                grad_clip=cfg.grad_clip, margin=cfg.hinge_margin, hinge_reduction=cfg.hinge_reduction,
                hooks=hooks, loader_generator=gen,
                seed=cfg.seed, show_progress=spec.show_progress and dist.is_main,
                loss_fn=_moment_loss_fn(moment_cfg) if moment_cfg is not None else None,
            )
            if resume_from is not None:
                ck = load_checkpoint(resume_from)
                model.load_state_dict(ck["model"])
                optimizer.load_state_dict(ck["optimizer"])
                if scheduler is not None:
                    scheduler.load_state_dict(ck["scheduler"])
                trainer.scaler.load_state_dict(ck["scaler"])
                trainer.state = TrainState.from_dict(ck["state"])
                rng = ck["rng"]
                if len(rng) == dist.world_size:
                    restore_rng_state(rng[dist.rank])
                else:
                    log.warning("resumed with %d processes instead of %d: RNG streams reseeded",
                                dist.world_size, len(rng))
                log.info("resumed from %s (epoch %d)", resume_from, trainer.state.epoch)
                _restore_best(ckpt_dir, trainer.state, dist)  # before pruning can take its epoch's file
            if writer is not None and trainer.state.global_step:
                writer.close()
                from torch.utils.tensorboard import SummaryWriter

                writer = SummaryWriter(str(out / "tensorboard"), purge_step=trainer.state.global_step + 1)
                hooks[2].writer = writer
            log.info("training %s on %s%s (%s) for %d epochs on %s, %d process(es)", spec.model, spec.dataset,
                     f"/{spec.task}" if spec.task else "", task_type, cfg.epochs, device, dist.world_size)
            state = trainer.train(cfg.epochs)
            barrier()
            best_path = _load_best(model, ckpt_dir, state, metric, dist)

        evaluated_epoch = eval_ckpt.get("epoch") if spec.eval_only else (
            state.best_epoch if state.best_epoch is not None else state.epoch)
        val_metrics, _ = run_eval("val")
        test_metrics, test_records = run_eval("test")
        result = {
            "model": spec.model,
            "dataset": spec.dataset,
            "task": spec.task,
            "task_type": task_type,
            "selection_metric": metric,
            "selection_mode": mode,
            "best_epoch": state.best_epoch,
            "best_checkpoint": str(best_path),
            "best_checkpoint_epoch": evaluated_epoch,
            "best_checkpoint_sha256": model_digest(model.state_dict()),  # the weights evaluated below
            "epochs_completed": state.epoch,
            "stopped_early": bool(state.stop),
            "val": val_metrics,
            "test": test_metrics,
            "baselines_test": _baselines(task_type, data, prepared, cfg),
            **({"moment_protocol": _protocol_record(cfg)} if task_type == "moment" else {}),
            "dropped_questions": data.dropped,
            "eval_only": spec.eval_only,
            "provenance": record,
        }
        if spec.eval_only:
            result["checkpoint"] = str(spec.checkpoint)
        if text_rule is not None:
            result["text_rule"] = text_rule
        if feature_change is not None:
            result["feature_change"] = feature_change
        if dist.is_main:
            _write_predictions(out, "test", test_records, task_type)
            write_json_atomic(out / "metrics.json", _finite(result))
            log.info("val %s %.4f, test %s %.4f (best epoch %s)", metric, val_metrics[metric], metric,
                     test_metrics[metric], state.best_epoch)
        barrier()
        return result
    finally:
        if writer is not None:
            writer.close()
        if handler is not None:
            log.removeHandler(handler)
            handler.close()
        stack.close()
        cleanup_distributed()


def _restore_best(ckpt_dir: Path, state: TrainState, dist: DistInfo) -> None:
    """Repair ``best.pt`` from the epoch checkpoints and the recorded best epoch (main process writes)."""
    if state.best_epoch is not None and dist.is_main:
        note = restore_best(ckpt_dir, state.best_epoch, state.best_sha256)
        if note:
            log.warning("%s", note)
    barrier()


def _load_best(model: torch.nn.Module, ckpt_dir: Path, state: TrainState, metric: str,
               dist: DistInfo) -> Path:
    """Load the model of the best validation epoch into ``model``, proven by its epoch and weights digest.

    Returns:
        The checkpoint evaluated: ``best.pt``, or, when no epoch gave a finite validation ``metric``, the
        last epoch's (the model as it is).

    Raises:
        CheckpointError: ``best.pt`` cannot be made to hold the recorded best epoch.
    """
    if state.best_epoch is None:
        log.warning("no epoch gave a finite validation %s, so there is no best.pt; evaluating the last "
                    "model (epoch %d)", metric, state.epoch)
        return latest_checkpoint(ckpt_dir) or ckpt_dir / "best.pt"
    _restore_best(ckpt_dir, state, dist)
    best_path = ckpt_dir / "best.pt"
    problem = check_best(best_path, state.best_epoch, state.best_sha256)
    if problem is not None:  # changed under the run after the repair: refuse rather than report it
        raise CheckpointError(f"{best_path}: {problem}, not the best epoch {state.best_epoch}; train again")
    model.load_state_dict(load_checkpoint(best_path)["model"])
    return best_path


def _check_glove(info: Any, cfg: TrainConfig) -> None:
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


def _check_eval_meta(meta: Mapping[str, Any], spec: RunSpec, question_vocab: list[str]) -> None:
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


def _official_text(spec: RunSpec, adapter: Any, meta: Mapping[str, Any], task_type: str) -> Any:
    """The dataset encoded as the official preprocessing of a converted checkpoint encodes it.

    Raises:
        CheckpointError: the checkpoint was converted without the official vocabulary (or, open-ended,
            answer list), or for another task type.
    """
    model = spec.model
    if meta.get("task_type") not in (None, task_type):
        raise ConfigError(f"{spec.checkpoint}: converted from a {meta['task_type']} checkpoint; this run's "
                          f"task is {task_type}")
    missing = ["--vocab (the official question vocabulary)"] if "text_rule" not in meta else []
    if task_type == "open" and not meta.get("answer_vocab"):
        missing.append("--answers (the official answer list)")
    if missing or "question_vocab" not in meta:
        raise CheckpointError(
            f"{spec.checkpoint}: converted from an official {model} checkpoint without "
            f"{' and '.join(missing) or 'its vocabulary'}: its word embeddings and answer outputs are "
            f"indexed by the official preprocessing's vocabularies, not this dataset's, so it cannot be "
            f"evaluated. Convert it again: vqa-convert {model} OFFICIAL_FILE --out FILE --vocab FILE"
            + (" --answers FILE" if task_type == "open" else "")
        )
    if meta["text_rule"] not in TEXT_RULES:
        raise CheckpointError(f"{spec.checkpoint}: text rule {meta['text_rule']!r} is unknown to this "
                              f"toolkit (it knows {', '.join(TEXT_RULES)}); update the toolkit")
    prepared = encode_official(adapter, meta["text_rule"], meta["question_vocab"],
                               meta.get("answer_vocab") or [])
    log.info("%s: questions encoded with the checkpoint's official rule (%s) and vocabulary (%d words%s)",
             spec.checkpoint, TEXT_RULES[meta["text_rule"]].description, len(prepared.question_vocab),
             f", {len(prepared.answer_vocab)} answers" if task_type == "open" else "")
    if task_type == "open":
        oov = int((prepared.splits["test"].answers < 0).sum())
        log.info("test: %d/%d answers are not in the official answer list (counted wrong)", oov,
                 len(prepared.splits["test"].answers))
    return prepared


def _moment_config(spec: RunSpec) -> MomentConfig:
    """The run's moment settings: the evaluated checkpoint's (``--eval-only``), else the spec's."""
    if spec.eval_only and spec.checkpoint is not None:
        meta = load_checkpoint(spec.checkpoint).get("meta", {})
        return build_config(MomentConfig, checkpoint_configs(meta, source=str(spec.checkpoint))[1],
                            section="moment")
    return spec.moment if spec.moment is not None else MomentConfig()


def _moment_loss_fn(moment: MomentConfig):
    """The moment loss with the run's label rule, regression weight, normalisation and ground truth."""
    settings = moment.loss_settings()
    return lambda outputs, batch: compute_losses("moment", outputs, batch, **settings)


def _protocol_record(cfg: TrainConfig) -> dict[str, Any]:
    """Which protocol produced a moment run's metrics (``metrics.json``: ``moment_protocol``)."""
    return {"name": cfg.moment_iou, "description": MOMENT_PROTOCOLS[cfg.moment_iou],
            "listed_nms": cfg.moment_nms}


def _finite(obj: Any) -> Any:
    """Replace NaN/inf floats by None so metrics.json stays strict JSON."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_finite(v) for v in obj]
    return obj
