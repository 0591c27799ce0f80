"""Training configuration: the frozen ``TrainConfig`` and validated building of any config dataclass.

A run's settings come from three layers, later ones winning: the dataclass defaults (the papers'
values), a YAML file (``--config``) with the sections ``train:`` and ``model:`` (and, for moment
retrieval, ``moment:``: ``train.moments.MomentConfig``), and ``--set`` overrides with dotted keys
(``train.lr=3e-4``, ``model.num_scales=4``, ``moment.pca_dim=64``). Every layer goes through
:func:`build_config`, which rejects unknown keys (listing the valid ones) and values of the wrong type;
the dataclass's own ``__post_init__`` rejects values out of range. Nothing here reads the command line.
Each model's own defaults (per dataset, clipping, precision) are its recipe's (``train/recipes/``);
:func:`paper_train_defaults` and :func:`paper_model_defaults` are re-exported from there.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import yaml

from train.recipes import paper_model_defaults, paper_train_defaults

__all__ = [
    "ConfigError",
    "SECTIONS",
    "TrainConfig",
    "build_config",
    "config_to_dict",
    "describe_fields",
    "paper_model_defaults",
    "paper_train_defaults",
    "parse_overrides",
    "load_yaml_config",
    "merge_sections",
]


class ConfigError(ValueError):
    """A configuration key is unknown or a value is invalid; the message says which and what is allowed."""


#: the sections of a config (``--config`` YAML, ``--set section.key=value``, a run's config.yaml); ``moment``
#: holds moment retrieval's data and loss settings (``train.moments.MomentConfig``)
SECTIONS = ("train", "model", "moment")


TASK_TYPES = ("open", "mc", "count")


@dataclass(frozen=True)
class TrainConfig:
    """Settings of the shared training loop (every model uses the same fields).

    Defaults follow MSPAN (Guo et al., 2021) and its official code where the paper is silent:
    Adam, lr 1e-4, weight decay 5e-6, batch 64 (TGIF-QA; 128 for MSVD/MSRVTT via MSPAN's recipe,
    :func:`paper_train_defaults`), StepLR(5, 0.5) or MultiStepLR([10, 15, 19, 23, 27], 0.5).
    A field's meaning is its comment below or its entry here (:func:`describe_fields` reads both).

    Attributes:
        epochs: epochs to train.
        batch_size: global batch size of one optimiser step (divided over the processes under torchrun,
            then into ``grad_accum`` micro-batches).
        grad_accum: micro-batches per optimiser step (gradient accumulation): each process's loader yields
            batch_size / (processes * grad_accum) questions at a time and the step's gradient is their
            question-weighted mean, equal to one batch of batch_size up to float rounding (BatchNorm
            statistics and dropout masks see the micro-batch). 1: no accumulation. Saves memory, not time.
        lr: learning rate.
        gamma: learning-rate factor at each scheduler step.
        seed: seeds Python, NumPy and torch, and the data order.
        num_workers: DataLoader worker processes per training process.
        max_question_len: questions are cut to this many tokens; None keeps them whole.
        ddp_find_unused_parameters: passed to DistributedDataParallel (models with unused branches).
        allow_zero_glove_coverage: accept a GloVe file that matches no question word (the embeddings
            then stay random, and the run records it).
        warmup_updates: inverse_sqrt scheduler: updates of linear warm-up before the 1/sqrt decay.
        warmup_init_lr: inverse_sqrt scheduler: learning rate at the first update of the warm-up.
        grad_clip: max global gradient norm; None disables it. Each model's default is its paper's or
            official code's (its recipe, ``train/recipes/``: none for MSPAN, MASN and CMIN); 12 is HCRN's.
        amp: autocast of training and evaluation, on CPU and CUDA: auto (bf16 where the device computes
            bf16 natively: CUDA with bf16, CPUs with AVX-512 BF16 or AMX; else fp32), bf16, fp32, fp16
            (CUDA only, with a gradient scaler), none (older configs: same as fp32); the resolved one is
            recorded. Each model's default is its official code's (its recipe, ``train/recipes/``).
        moment_nms: moment retrieval: NMS IoU threshold over the candidate windows of the listed top-5
            moments (predictions files, vqa-answer, the continuous and steps protocols; >= 1 disables it).
        moment_iou: moment retrieval metrics' protocol: official (CMIN's evaluation: the arg-max window,
            no NMS, its step IoU; R@5 after NMS at m - 0.05), continuous (top moments after NMS at
            moment_nms, IoU in seconds) or steps (the same on the official step IoU, both sides mapped
            alike); see train.tasks.moment_losses.MOMENT_PROTOCOLS.
    """

    epochs: int = 30
    batch_size: int = 64
    eval_batch_size: int | None = None  # None: same as batch_size
    grad_accum: int = 1
    optimizer: str = "adam"  # adam | adamw | sgd
    lr: float = 1e-4
    weight_decay: float = 5e-6  # official MSPAN code (the paper gives none)
    momentum: float = 0.9  # sgd only
    scheduler: str = "multistep"  # none | step | multistep | inverse_sqrt (per update, after warm-up)
    step_size: int = 5  # StepLR period in epochs
    milestones: tuple[int, ...] = (10, 15, 19, 23, 27)  # MultiStepLR epochs
    gamma: float = 0.5
    grad_clip: float | None = 12.0
    amp: str = "auto"
    seed: int = 0
    num_workers: int = 0
    patience: int | None = None  # early stopping after this many epochs without val improvement
    hinge_margin: float = 1.0  # multiple choice: max(0, margin + s_neg - s_pos)
    # multiple choice: sum (summed over the negative candidates, averaged over questions) | mean (averaged
    # over the (question, negative) pairs: MASN's official scale)
    hinge_reduction: str = "sum"
    answer_vocab_size: int | None = None  # open-ended: most frequent training answers; None = dataset default
    max_question_len: int | None = None
    val_fraction: float = 0.1  # held out of train (fixed seed) when a dataset has no val split
    keep_checkpoints: int = 1  # per-epoch checkpoints kept besides best.pt
    log_every: int = 20  # steps between TensorBoard scalars
    ddp_find_unused_parameters: bool = False
    # none (the papers): features as extracted; standardize: per-channel z-score with the mean and std of
    # the training split's videos' real rows (padding left out; --resume / --eval-only use the checkpoint's)
    feature_norm: str = "none"
    # GloVe: warn when fewer than this share of the question words are in the file; a file matching no word
    # at all is refused unless allow_zero_glove_coverage (then the embeddings are random, and recorded so)
    glove_warn_coverage: float = 0.5
    allow_zero_glove_coverage: bool = False
    # inverse_sqrt: lr rises linearly from warmup_init_lr to lr over warmup_updates, then lr*sqrt(w/step)
    warmup_updates: int = 0
    warmup_init_lr: float = 0.0
    moment_nms: float = 0.5
    moment_iou: str = "official"

    def __post_init__(self) -> None:
        def bad(name: str, why: str) -> ConfigError:
            return ConfigError(f"train.{name}={getattr(self, name)!r} is invalid: {why}")

        for name in ("epochs", "batch_size", "grad_accum", "step_size", "keep_checkpoints", "log_every"):
            if getattr(self, name) < 1:
                raise bad(name, "must be >= 1")
        for name in ("eval_batch_size", "answer_vocab_size", "max_question_len", "patience"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise bad(name, "must be >= 1 or null")
        if self.batch_size % self.grad_accum:
            raise bad("grad_accum", f"train.batch_size={self.batch_size} must be divisible by it")
        if self.num_workers < 0:
            raise bad("num_workers", "must be >= 0")
        if self.optimizer not in ("adam", "adamw", "sgd"):
            raise bad("optimizer", "choose adam, adamw or sgd")
        if self.scheduler not in ("none", "step", "multistep", "inverse_sqrt"):
            raise bad("scheduler", "choose none, step, multistep or inverse_sqrt")
        if self.warmup_updates < 0 or not (math.isfinite(self.warmup_init_lr) and self.warmup_init_lr >= 0):
            raise bad("warmup_updates", "warmup_updates and warmup_init_lr must be >= 0")
        if not (math.isfinite(self.moment_nms) and self.moment_nms > 0):
            raise bad("moment_nms", "must be an IoU threshold > 0 (>= 1 disables NMS)")
        if self.moment_iou not in ("official", "continuous", "steps"):
            raise bad("moment_iou", "choose official, continuous or steps")
        if self.hinge_reduction not in ("sum", "mean"):
            raise bad("hinge_reduction", "choose sum (over the negatives) or mean (over the pairs)")
        if self.feature_norm not in ("none", "standardize"):
            raise bad("feature_norm", "choose none or standardize")
        if self.amp not in ("auto", "bf16", "fp32", "fp16", "none"):
            raise bad("amp", "choose auto, bf16, fp32 or fp16 (CUDA only); none means fp32")
        for name in ("lr", "gamma"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise bad(name, "must be a finite number > 0")
        for name in ("weight_decay", "momentum", "hinge_margin"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise bad(name, "must be a finite number >= 0")
        if self.grad_clip is not None and not (math.isfinite(self.grad_clip) and self.grad_clip > 0):
            raise bad("grad_clip", "must be > 0 or null")
        if not 0.0 <= self.glove_warn_coverage <= 1.0:
            raise bad("glove_warn_coverage", "must be between 0 and 1")
        if not 0.0 < self.val_fraction < 1.0:
            raise bad("val_fraction", "must be between 0 and 1 (exclusive)")
        if any(m < 1 for m in self.milestones) or list(self.milestones) != sorted(set(self.milestones)):
            raise bad("milestones", "must be strictly increasing epochs >= 1")

    @property
    def effective_eval_batch_size(self) -> int:
        return self.eval_batch_size or self.batch_size


def describe_fields(cls: type) -> list[tuple[str, str, str, str]]:
    """``(name, type, default, meaning)`` of every field of a config dataclass, for ``--help``.

    The meaning is the field's entry in the class docstring's ``Attributes:`` section (first sentence)
    or else the comment on (or just above) the field's line in the source.
    """
    import inspect

    docs = _docstring_attributes(inspect.getdoc(cls) or "")
    try:
        comments = _field_comments(inspect.getsource(cls))
    except (OSError, TypeError):
        comments = {}
    hints = typing.get_type_hints(cls)
    out = []
    for f in dataclasses.fields(cls):
        default = f.default if f.default is not dataclasses.MISSING else (
            f.default_factory() if f.default_factory is not dataclasses.MISSING else "required")
        default_text = str(list(default) if isinstance(default, tuple) else default)
        meaning = docs.get(f.name) or comments.get(f.name, "")
        out.append((f.name, _help_type(hints[f.name]), default_text, meaning.replace("``", "")))
    return out


def _help_type(tp: Any) -> str:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is typing.Literal:
        return "|".join(str(a) for a in args)
    if origin in (typing.Union, types.UnionType):
        return " | ".join(_help_type(a) for a in args)
    if origin in (tuple, list):
        return f"list[{_help_type(args[0])}]" if args else "list"
    return "None" if tp is type(None) else _type_name(tp)


def _docstring_attributes(doc: str) -> dict[str, str]:
    out: dict[str, str] = {}
    lines = doc.splitlines()
    if "Attributes:" not in [ln.strip() for ln in lines]:
        return out
    start = [ln.strip() for ln in lines].index("Attributes:") + 1
    current = None
    for line in lines[start:]:
        if line.strip() and not line.startswith("    "):
            break
        if line.startswith("        ") and current:  # continuation
            out[current] += " " + line.strip()
            continue
        name, sep, text = line.strip().partition(":")
        if sep and name.isidentifier():
            current, out[name] = name, text.strip()
    return out


def _field_comments(source: str) -> dict[str, str]:
    out: dict[str, str] = {}
    above: list[str] = []
    for line in source.splitlines():
        stripped = line.strip()
        if stripped.startswith("#"):
            above.append(stripped.lstrip("# "))
            continue
        name, sep, rest = stripped.partition(":")
        if sep and name.isidentifier() and "=" in rest:
            _, hash_, comment = rest.partition("  # ")
            out[name] = comment.strip() if hash_ else " ".join(above)
        above = []
    return out


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Check/convert one YAML value against a dataclass field annotation."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, key)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(f"{key}={value!r} is invalid: expected {_type_name(tp)}")
    if origin is typing.Literal:
        if value in args:
            return value
        raise ConfigError(f"{key}={value!r} is invalid: choose one of {', '.join(map(repr, args))}")
    if origin is tuple:
        if isinstance(value, str | bytes) or not isinstance(value, list | tuple):
            raise ConfigError(f"{key}={value!r} is invalid: expected a list, e.g. [1, 2]")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(v, args[0], key) for v in value)
        if len(args) != len(value):
            raise ConfigError(f"{key}={value!r} is invalid: expected {len(args)} items")
        return tuple(_coerce(v, a, key) for v, a in zip(value, args, strict=True))
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{key}={value!r} is invalid: expected true or false")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise ConfigError(f"{key}={value!r} is invalid: expected an integer")
    if tp is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # YAML 1.1 reads "1e-4" (no dot) as a string
            try:
                return float(value)
            except ValueError:
                pass
        raise ConfigError(f"{key}={value!r} is invalid: expected a number")
    if tp is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"{key}={value!r} is invalid: expected a string")
    if tp is Any or tp is object:
        return value
    if isinstance(tp, type) and isinstance(value, tp):
        return value
    raise ConfigError(f"{key}={value!r} is invalid: expected {_type_name(tp)}")


def build_config(cls: type, values: Mapping[str, Any], *, section: str) -> Any:
    """Build a frozen config dataclass from plain values, rejecting unknown keys and bad values.

    Args:
        cls: a dataclass type (``TrainConfig`` or a model's config class).
        values: field name -> value (YAML scalars / lists).
        section: ``"train"`` or ``"model"``, used in messages (``train.lr``).

    Returns:
        An instance of ``cls``.

    Raises:
        ConfigError: naming the key, the value and what is allowed (for unknown keys: the valid keys).
    """
    if not dataclasses.is_dataclass(cls):
        raise TypeError(f"{cls!r} is not a dataclass")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(values) - set(fields))
    if unknown:
        valid = ", ".join(f"{section}.{name}" for name in fields)
        raise ConfigError(
            f"unknown {section} key(s) {', '.join(f'{section}.{k}' for k in unknown)} for "
            f"{cls.__name__}; valid keys: {valid}"
        )
    kwargs = {name: _coerce(value, hints[name], f"{section}.{name}") for name, value in values.items()}
    try:
        return cls(**kwargs)
    except ConfigError:
        raise
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"invalid {section} config ({cls.__name__}): {exc}") from exc


def config_to_dict(cfg: Any) -> dict[str, Any]:
    """A dataclass config as plain YAML/JSON-able values (tuples become lists)."""

    def plain(v: Any) -> Any:
        if isinstance(v, tuple | list):
            return [plain(x) for x in v]
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items()}
        return v

    return {f.name: plain(getattr(cfg, f.name)) for f in dataclasses.fields(cfg) if f.init}


def parse_overrides(items: list[str] | tuple[str, ...]) -> dict[str, dict[str, Any]]:
    """Parse ``--set`` items ``section.key=value`` (value read as a YAML scalar or flow list).

    Returns:
        ``{"train": {...}, "model": {...}, "moment": {...}}``.

    Raises:
        ConfigError: on a malformed item or a section other than those of :data:`SECTIONS`.
    """
    out: dict[str, dict[str, Any]] = {name: {} for name in SECTIONS}
    for item in items:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(f"--set {item!r}: expected section.key=value, e.g. train.lr=3e-4")
        section, dot, name = key.partition(".")
        if not dot or section not in out or not name or "." in name:
            raise ConfigError(
                f"--set {item!r}: the key must be train.<field>, model.<field> or moment.<field> (e.g. "
                "model.dropout=0.1)"
            )
        try:
            value = yaml.safe_load(raw) if raw.strip() else None
        except yaml.YAMLError as exc:
            raise ConfigError(f"--set {item!r}: value is not valid YAML: {exc}") from exc
        out[section][name] = value
    return out


def merge_sections(*layers: Mapping[str, Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """Merge ``{"train": {...}, "model": {...}, "moment": {...}}`` layers, later ones winning key by key."""
    out: dict[str, dict[str, Any]] = {name: {} for name in SECTIONS}
    for layer in layers:
        for section, values in layer.items():
            if section not in out:
                raise ConfigError(f"unknown config section {section!r}; valid sections: "
                                  f"{', '.join(SECTIONS)}")
            if values is None:
                continue
            if not isinstance(values, Mapping):
                raise ConfigError(f"config section {section!r} must be a mapping, got {values!r}")
            out[section].update(values)
    return out


#: top-level keys of a run's own ``config.yaml`` besides its sections (it is accepted by ``--config``)
RUN_CONFIG_KEYS = frozenset(
    {"model_name", "dataset", "task", "task_type", "root", "features", "glove", "toolkit_version"}
)


def load_yaml_config(path: str, *, model: str | None = None) -> dict[str, dict[str, Any]]:
    """Read a ``--config`` YAML file with the optional sections ``train``, ``model`` and ``moment``.

    A run's own ``config.yaml`` is accepted too: its other top-level keys (``model_name``, paths, ...)
    describe that run and are not settings; ``model`` given, its ``model_name`` must be ``model``.

    Raises:
        ConfigError: naming the file when it is not valid YAML or has other top-level keys.
    """
    try:
        with open(path, encoding="utf-8") as fh:
            data = yaml.safe_load(fh)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the config file: {exc}") from exc
    if data is None:
        return {name: {} for name in SECTIONS}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping with the sections 'train' and 'model'")
    if "model_name" in data:  # a run's own config.yaml
        if model is not None and data["model_name"] != model:
            raise ConfigError(
                f"{path}: is the config of a {data['model_name']!r} run, not {model!r}; "
                f"use it with `vqa-train {data['model_name']}`"
            )
        data = {k: v for k, v in data.items() if k not in RUN_CONFIG_KEYS and k != "provenance"}
    unknown = sorted(set(data) - set(SECTIONS))
    if unknown:
        raise ConfigError(f"{path}: unknown top-level key(s) {unknown}; valid sections: "
                          f"{', '.join(SECTIONS)}")
    return merge_sections(data)

