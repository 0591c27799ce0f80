"""``vqa-train``: train and evaluate a registered model on a dataset from extracted features.

Usage::

    vqa-train MODEL --dataset NAME [--task TASK] --root DATA --features FEATURE_DIR --out RUN_DIR
              [--config FILE.yaml] [--set train.lr=3e-4 --set model.num_scales=4 ...]
              [--epochs N] [--batch-size N] [--device auto|cpu|cuda] [--glove PATH] [--seed N]
              [--num-workers N] [--resume] [--eval-only --checkpoint PATH [--eval-name NAME]]
              [--allow-missing-features] [--allow-feature-change]

    torchrun --nproc_per_node=4 -m train.cli mspan ...     # DDP, one process per GPU

One subcommand per entry of ``models.MODELS``, made by an explicit loop in :func:`build_cli` when the
command runs (importing this module parses nothing and registers nothing). Settings are layered:
the paper's per-dataset defaults, then the run's saved config (``--resume``), the ``--config`` YAML
file (sections ``train:``, ``model:`` and, for moment retrieval, ``moment:``), ``--set`` items, and
finally the dedicated flags (``--epochs`` etc.). Older CMIN configs and checkpoints that carry the
``moment`` settings as ``model.*`` keys are read with those keys moved (``train.moments.upgrade_sections``).
Unknown keys and invalid values stop the command before anything runs.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

import click
import yaml

from extract.reader import FeatureReader, ManifestError
from models import MODELS, ModelEntry
from pipelines.atomic import DirectoryInUseError
from pipelines.datasets import DATASETS, DatasetFormatError, get_dataset
from pipelines.glove import GloveFormatError
from train.checkpoint import CheckpointError, load_checkpoint
from train.config import (
    ConfigError,
    TrainConfig,
    build_config,
    describe_fields,
    load_yaml_config,
    merge_sections,
    parse_overrides,
)
from train.data import FeatureMismatchError, check_feature_set
from train.loop import NonFiniteLossError, RunDirError
from train.moments import MomentConfig, checkpoint_configs, fill_video_dim, upgrade_sections
from train.recipes import get_recipe, paper_model_defaults, paper_train_defaults
from train.runner import (
    RunSpec,
    effective_config,
    eval_out_dir,
    eval_train_config,
    fill_from_features,
    run,
)
from train.tasks import get_task

__all__ = ["build_cli", "main"]


def _qa_datasets() -> list[str]:
    """Datasets a model can train on: QA and moment retrieval (``folder`` is extraction only)."""
    return sorted(name for name, cls in DATASETS.items() if getattr(cls, "kind", "qa") in ("qa", "moment"))


def _datasets_epilog() -> str:
    lines = []
    for name in _qa_datasets():
        tasks = getattr(DATASETS[name], "tasks", ())
        lines.append(f"{name} (tasks: {', '.join(tasks)})" if tasks else name)
    return "Datasets: " + "; ".join(lines) + "."


def _keys_epilog(entry: ModelEntry) -> str:
    """Every train.* and model.* key with its type, default and meaning (pre-formatted: ``\\b``)."""
    parts = []
    sections = [
        ("train", TrainConfig, "each model's paper values (batch size, lr schedule, clipping, precision) "
                               "replace some defaults"),
        ("model", entry.config_cls, "the paper's defaults; *_dim and num_frames come from the features"),
    ]
    if "moment" in entry.task_types:
        sections.append(("moment", MomentConfig, "data preparation and loss of moment retrieval"))
    for section, cls, note in sections:
        lines = [f"\b\n{section}.* keys (--set {section}.KEY=VALUE or section {section}: of --config; "
                 f"{note}):"]
        for key, type_name, default, meaning in describe_fields(cls):
            lines.append(f"  {section}.{key} ({type_name}, default {default}): {meaning}")
        parts.append("\n".join(lines))
    exits = ("Exit status: 0 done, 1 error (one line naming the file; --debug shows the traceback), "
             "2 usage error, 130 interrupted (re-run the same command, with --resume, to continue).")
    return "\n\n".join([*parts, "--print-config shows the effective settings of a command line.",
                        _datasets_epilog(), exits])


def _model_command(name: str, entry: ModelEntry) -> click.Command:
    module = sys.modules.get(entry.config_cls.__module__)
    doc = ((module.__doc__ if module is not None else None) or entry.config_cls.__name__).strip().splitlines()

    @click.command(
        name=name,
        help=f"Train {name} ({doc[0].rstrip('.')}) on a QA or moment-retrieval dataset. "
        f"Feature set: {entry.feature_set}; task types: {', '.join(entry.task_types)}.",
        epilog=_keys_epilog(entry),
    )
    @click.option("--dataset", required=True, type=click.Choice(_qa_datasets()), help="Dataset adapter.")
    @click.option("--task", default=None, help="Task of datasets with several (TGIF-QA: frameqa, ...).")
    @click.option("--root", required=True, type=click.Path(exists=True, file_okay=False, path_type=Path),
                  help="Dataset root (annotation files).")
    @click.option("--features", default=None, type=click.Path(exists=True, file_okay=False, path_type=Path),
                  help="Feature directory written by vqa-extract (not with model.input=frames, which reads "
                       "the videos under --root).")
    @click.option("--out", required=True, type=click.Path(file_okay=False, path_type=Path),
                  help="Run directory (config, checkpoints, metrics, predictions).")
    @click.option("--config", "config_file", type=click.Path(exists=True, dir_okay=False, path_type=Path),
                  help="YAML file with sections train: and model: (a run's own config.yaml works too).")
    @click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
                  help="Override a setting, e.g. --set train.lr=3e-4 --set model.num_scales=4 (repeatable).")
    @click.option("--epochs", type=int, default=None, help="= --set train.epochs=N")
    @click.option("--batch-size", type=int, default=None, help="Global batch size (= train.batch_size).")
    @click.option("--seed", type=int, default=None, help="= --set train.seed=N")
    @click.option("--num-workers", type=int, default=None, help="DataLoader workers per process.")
    @click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
    @click.option("--glove", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
                  help="GloVe vectors (text or cached) for the question embeddings.")
    @click.option("--resume", is_flag=True, help="Continue from the newest checkpoint in --out.")
    @click.option("--eval-only", is_flag=True, help="Only evaluate --checkpoint on val and test.")
    @click.option("--checkpoint", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
                  help="Checkpoint for --eval-only (e.g. RUN/checkpoints/best.pt).")
    @click.option("--allow-missing-features", is_flag=True,
                  help="Drop questions whose video has no features (counted in the log) instead of failing.")
    @click.option("--progress/--no-progress", default=None,
                  help="Show progress bars [default: only when stderr is a terminal].")
    @click.option("--allow-feature-change", is_flag=True,
                  help="Resume or evaluate on features other than the run recorded (the change is recorded "
                  "in metrics.json).")
    @click.option("--eval-name", default=None, metavar="NAME",
                  help="--eval-only into a training run's --out writes to OUT/eval-NAME (default: the "
                  "checkpoint's stem, e.g. eval-best); the run's own files are never overwritten.")
    @click.option("--threads", type=click.IntRange(min=1), default=None,
                  help="torch CPU threads per process [default: the usable CPUs / processes per node, at "
                  "most 8]; recorded in train.log.")
    @click.option("--print-config", is_flag=True, help="Print the effective config (YAML) and exit.")
    def command(threads: int | None, print_config: bool, **kw: Any) -> None:
        spec = _make_spec(name, entry, **kw)
        spec = dataclasses.replace(spec, threads=threads or default_threads())
        if print_config:
            task_type = get_dataset(spec.dataset)(spec.root, task=spec.task).task_type
            click.echo(yaml.safe_dump(effective_config(spec, task_type), sort_keys=False), nl=False)
            return
        _execute(spec)

    return command


def _make_spec(
    name: str,
    entry: ModelEntry,
    *,
    dataset: str,
    task: str | None,
    root: Path,
    features: Path,
    out: Path,
    config_file: Path | None,
    overrides: tuple[str, ...],
    epochs: int | None,
    batch_size: int | None,
    seed: int | None,
    num_workers: int | None,
    device: str,
    glove: Path | None,
    resume: bool,
    eval_only: bool,
    checkpoint: Path | None,
    allow_missing_features: bool,
    progress: bool,
    allow_feature_change: bool = False,
    eval_name: str | None = None,
) -> RunSpec:
    """Validate every setting and build the :class:`RunSpec` (raises click errors with clear messages)."""
    _check_flags(eval_only=eval_only, resume=resume, checkpoint=checkpoint)
    task_type = _task_type(name, entry, dataset, task, root)
    reader = _feature_reader(name, entry, features)
    flags = {"epochs": epochs, "batch_size": batch_size, "seed": seed, "num_workers": num_workers}
    try:
        sections = _setting_layers(name, entry, dataset, task, task_type, out=out, resume=resume,
                                   eval_only=eval_only, config_file=config_file, overrides=overrides,
                                   flags=flags)
        train_cfg, model_cfg, moment_cfg = _configs(name, entry, sections, reader, eval_only=eval_only,
                                                    checkpoint=checkpoint)
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from exc
    except CheckpointError as exc:  # a bad file, not a bad command line
        raise click.ClickException(str(exc)) from exc
    return RunSpec(
        model=name, dataset=dataset, task=task, root=root, features=features or root, out=out,
        train=train_cfg,
        model_config=model_cfg, moment=moment_cfg, glove=glove, device=device, resume=resume,
        eval_only=eval_only,
        checkpoint=checkpoint, allow_missing_features=allow_missing_features,
        show_progress=sys.stderr.isatty() if progress is None else progress,
        allow_feature_change=allow_feature_change, eval_name=eval_name,
    )


def _check_flags(*, eval_only: bool, resume: bool, checkpoint: Path | None) -> None:
    """The flags that go together: ``--eval-only`` with ``--checkpoint``, never with ``--resume``."""
    if eval_only and checkpoint is None:
        raise click.UsageError("--eval-only needs --checkpoint PATH")
    if checkpoint is not None and not eval_only:
        raise click.UsageError("--checkpoint is used with --eval-only (to continue a run use --resume)")
    if eval_only and resume:
        raise click.UsageError("--eval-only and --resume exclude each other")


def _task_type(name: str, entry: ModelEntry, dataset: str, task: str | None, root: Path) -> str:
    """The dataset's task type (its annotation files read), which the model must support."""
    try:
        adapter = get_dataset(dataset)(root, task=task)
        task_type = adapter.task_type
    except (DatasetFormatError, FileNotFoundError, KeyError) as exc:
        raise click.UsageError(str(exc).strip("'\"")) from exc
    if task_type is None:
        raise click.UsageError(f"dataset {dataset!r} needs --task, one of: {', '.join(adapter.tasks)}")
    if task_type not in entry.task_types:
        raise click.UsageError(f"model {name!r} does not support {task_type!r} tasks ({dataset}/{task})")
    return task_type


def _feature_reader(name: str, entry: ModelEntry, features: Path | None) -> FeatureReader | None:
    """The feature directory, opened and checked to be the model's feature set (None without
    ``--features``: the model reads raw frames, ``model.input=frames``, checked in :func:`_configs`)."""
    if features is None:
        return None
    try:
        reader = FeatureReader(features)
    except ManifestError as exc:
        raise click.UsageError(str(exc)) from exc
    try:  # before any model.* check: a wrong feature directory explains every later mismatch
        check_feature_set(reader, entry.feature_set, model=name)
    except FeatureMismatchError as exc:
        raise click.ClickException(str(exc)) from exc
    return reader


def _setting_layers(
    name: str, entry: ModelEntry, dataset: str, task: str | None, task_type: str, *, out: Path, resume: bool,
    eval_only: bool, config_file: Path | None, overrides: tuple[str, ...], flags: dict[str, Any],
) -> list[dict[str, dict[str, Any]]]:  # fmt: skip
    """The layers of settings, later ones winning: the recipe's defaults, the resumed run's saved config,
    ``--config``, ``--set`` and the dedicated flags (older moment sections upgraded)."""
    defaults = {"train": paper_train_defaults(name, dataset, task, task_type),
                "model": {} if eval_only else paper_model_defaults(name, dataset, task, task_type)}
    layers: list[tuple[str, dict[str, dict[str, Any]]]] = [("defaults", defaults)]
    saved_path = out / "config.yaml"
    if resume and saved_path.exists():
        saved = yaml.safe_load(saved_path.read_text(encoding="utf-8")) or {}
        layers.append((str(saved_path), {k: saved.get(k) or {} for k in ("train", "model", "moment")}))
    if config_file is not None:
        layers.append((str(config_file), load_yaml_config(str(config_file), model=name)))
    layers.append(("--set", parse_overrides(overrides)))
    layers.append(("flags", {"train": {k: v for k, v in flags.items() if v is not None}}))
    moment_model = "moment" in entry.task_types
    return [upgrade_sections(layer, source=src) if moment_model else layer for src, layer in layers]


def _configs(name: str, entry: ModelEntry, sections: list[dict[str, dict[str, Any]]],
             reader: FeatureReader | None,
             *, eval_only: bool, checkpoint: Path | None) -> tuple[TrainConfig, Any, MomentConfig | None]:
    """The train, model and moment configs of the merged layers (``--eval-only``: the checkpoint's)."""
    moment_model = "moment" in entry.task_types
    merged = merge_sections(*sections)
    if merged["moment"] and not moment_model:
        raise ConfigError(f"moment.* settings ({', '.join('moment.' + k for k in merged['moment'])}) are "
                          f"moment retrieval's; {name} does not retrieve moments")
    train_cfg = build_config(TrainConfig, merged["train"], section="train")
    if eval_only:
        train_cfg, model_values, moment_values = _checkpoint_settings(name, checkpoint, sections, train_cfg)
    else:
        if reader is None and merged["model"].get("input", "features") == "features":
            raise ConfigError("--features is required (only model.input=frames reads the videos instead)")
        model_values = merged["model"] if reader is None else fill_from_features(
            entry.config_cls, merged["model"], reader.outputs)
        moment_values = merged["moment"]
    moment_cfg = build_config(MomentConfig, moment_values, section="moment") if moment_model else None
    if moment_cfg is not None and not eval_only:
        model_values = fill_video_dim(model_values, moment_cfg, reader.outputs["clips"].shape[-1])
    return train_cfg, build_config(entry.config_cls, model_values, section="model"), moment_cfg


def _checkpoint_settings(
    name: str, checkpoint: Path, sections: list[dict[str, dict[str, Any]]], train_cfg: TrainConfig,
) -> tuple[TrainConfig, dict[str, Any], dict[str, Any]]:  # fmt: skip
    """``--eval-only``: the model and moment settings of the checkpoint, with the model's moved directories
    and inference-only settings (its recipe's ``path_keys``, ``eval_keys``) as given; every
    result-affecting train.* setting from the checkpoint."""
    recipe = get_recipe(name)
    merged = merge_sections(*sections)
    may_set = (*recipe.path_keys, *recipe.eval_keys)
    moved = {k: v for k, v in merged["model"].items() if k in may_set}
    if set(merged["model"]) - set(moved) or merged["moment"]:
        given = [f"model.{k}" for k in merged["model"] if k not in moved]
        allowed = f"; only {', '.join('model.' + k for k in may_set)} may be set" if may_set else ""
        raise ConfigError(
            "--eval-only takes the model and moment configs from the checkpoint; drop the settings "
            f"({', '.join(given + ['moment.' + k for k in merged['moment']])}){allowed}"
        )
    meta = load_checkpoint(checkpoint).get("meta", {})
    model_values, moment_values = checkpoint_configs(meta, source=str(checkpoint))
    if "train_config" in meta:  # every result-affecting train.* setting comes from the checkpoint
        explicit = merge_sections(*sections[1:])["train"]
        saved_train = json.loads(meta["train_config"])
        train_cfg = eval_train_config(saved_train, explicit, source=str(checkpoint))
    return train_cfg, {**model_values, **moved}, moment_values


def _rank() -> int:
    """This process's rank under torchrun (0 otherwise)."""
    return int(os.environ.get("RANK", "0") or 0)


def default_threads() -> int:
    """torch CPU threads per process: the usable CPUs shared by the node's processes, at most 8.

    torch's own default (every core) ran 14x slower than one thread on a busy shared machine; a few
    threads keep most of the speed of an idle one.
    """
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    per_node = int(os.environ.get("LOCAL_WORLD_SIZE", "1") or 1)
    return max(1, min(8, usable // max(1, per_node)))


def _execute(spec: RunSpec) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    # under torchrun only rank 0 talks (the other ranks still raise their errors)
    handler.setLevel(logging.INFO if _rank() == 0 else logging.ERROR)
    log = logging.getLogger("train")
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    try:
        result = run(spec)
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from exc
    except (FeatureMismatchError, CheckpointError, NonFiniteLossError, DatasetFormatError,
            ManifestError, GloveFormatError, DirectoryInUseError, RunDirError) as exc:
        raise click.ClickException(str(exc)) from exc
    finally:
        log.removeHandler(handler)
    if _rank() != 0:
        return
    metric = result["selection_metric"]
    baselines = get_task(result["task_type"]).summary_baselines(result)
    base = ", ".join(f"{k} {v:.4f}" for k, v in baselines.items())
    protocol = f" [{result['moment_protocol']['name']} protocol]" if "moment_protocol" in result else ""
    click.echo(
        f"{spec.model} {spec.dataset}{'/' + spec.task if spec.task else ''}{protocol}: val {metric} "
        f"{result['val'][metric]:.4f}, test {metric} {result['test'][metric]:.4f} ({base}); "
        f"best checkpoint {result['best_checkpoint']}; outputs in {eval_out_dir(spec)}"
    )


def build_cli() -> click.Group:
    """The ``vqa-train`` click group with one subcommand per registered model (explicit loop)."""
    group = click.Group(
        name="vqa-train",
        context_settings={"help_option_names": ["-h", "--help"]},
        help="Train and evaluate video QA models from extracted features. "
        f"MODEL is one of: {', '.join(MODELS)}. Run `vqa-train MODEL --help` for its options and keys.",
        epilog=_datasets_epilog(),
    )
    for name, entry in MODELS.items():
        group.add_command(_model_command(name, entry))
    return group


def main(argv: list[str] | None = None) -> None:
    """Console entry point ``vqa-train``."""
    from pipelines.errors import run_cli

    run_cli(build_cli(), argv, prog_name="vqa-train", user_errors=_user_errors,
            interrupted_hint="re-run the same command with --resume to continue from the last checkpoint")


def _user_errors() -> tuple[type[BaseException], ...]:
    """The exception classes that are the user's to fix (one line, no traceback; see pipelines.errors)."""
    from pipelines.paths import UnsafePathError

    return (ConfigError, CheckpointError, FeatureMismatchError, NonFiniteLossError, DatasetFormatError,
            ManifestError, GloveFormatError, UnsafePathError, RunDirError, DirectoryInUseError)


if __name__ == "__main__":
    main()
