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
file (sections ``train:`` and ``model:``), ``--set`` items, and finally the dedicated flags
(``--epochs`` etc.). Unknown keys and invalid values stop the command before anything runs.
"""

from __future__ import annotations

import dataclasses
import json
import logging
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
    load_yaml_config,
    merge_sections,
    paper_model_defaults,
    paper_train_defaults,
    parse_overrides,
)
from train.data import FeatureMismatchError
from train.loop import NonFiniteLossError
from train.runner import RunSpec, eval_out_dir, eval_train_config, fill_from_features, run

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
    train_keys = ", ".join(f.name for f in dataclasses.fields(TrainConfig))
    model_keys = ", ".join(f.name for f in dataclasses.fields(entry.config_cls))
    return f"train.* keys: {train_keys}.\n\nmodel.* keys: {model_keys}.\n\n{_datasets_epilog()}"


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
    @click.option("--features", required=True, type=click.Path(exists=True, file_okay=False, path_type=Path),
                  help="Feature directory written by vqa-extract.")
    @click.option("--out", required=True, type=click.Path(file_okay=False, path_type=Path),
                  help="Run directory (config, checkpoints, metrics, predictions).")
    @click.option("--config", "config_file", type=click.Path(exists=True, dir_okay=False, path_type=Path),
                  help="YAML file with sections train: and model:.")
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
    @click.option("--progress/--no-progress", default=True, help="Show progress bars.")
    @click.option("--allow-feature-change", is_flag=True,
                  help="Resume or evaluate on features other than the run recorded (the change is recorded "
                  "in metrics.json).")
    @click.option("--eval-name", default=None, metavar="NAME",
                  help="--eval-only into a training run's --out writes to OUT/eval-NAME (default: the "
                  "checkpoint's stem, e.g. eval-best); the run's own files are never overwritten.")
    def command(**kw: Any) -> None:
        spec = _make_spec(name, entry, **kw)
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
    if eval_only and checkpoint is None:
        raise click.UsageError("--eval-only needs --checkpoint PATH")
    if checkpoint is not None and not eval_only:
        raise click.UsageError("--checkpoint is used with --eval-only (to continue a run use --resume)")
    if eval_only and resume:
        raise click.UsageError("--eval-only and --resume exclude each other")
    try:
        adapter = get_dataset(dataset)(root, task=task)
        task_type = adapter.task_type
    except (DatasetFormatError, FileNotFoundError, KeyError) as exc:
        raise click.UsageError(str(exc).strip("'\"")) from exc
    if task_type is None:
        raise click.UsageError(f"dataset {dataset!r} needs --task, one of: {', '.join(adapter.tasks)}")
    if task_type not in entry.task_types:
        raise click.UsageError(f"model {name!r} does not support {task_type!r} tasks ({dataset}/{task})")
    try:
        reader = FeatureReader(features)
    except ManifestError as exc:
        raise click.UsageError(str(exc)) from exc

    try:
        defaults = {"train": paper_train_defaults(name, dataset, task, task_type),
                    "model": paper_model_defaults(name, dataset)}
        layers: list[dict[str, dict[str, Any]]] = [defaults]
        saved_path = out / "config.yaml"
        if resume and saved_path.exists():
            saved = yaml.safe_load(saved_path.read_text(encoding="utf-8")) or {}
            layers.append({"train": saved.get("train") or {}, "model": saved.get("model") or {}})
        if config_file is not None:
            layers.append(load_yaml_config(str(config_file)))
        layers.append(parse_overrides(overrides))
        flags = {"epochs": epochs, "batch_size": batch_size, "seed": seed, "num_workers": num_workers}
        layers.append({"train": {k: v for k, v in flags.items() if v is not None}})
        merged = merge_sections(*layers)
        train_cfg = build_config(TrainConfig, merged["train"], section="train")
        if eval_only:
            if merged["model"]:
                raise ConfigError(
                    "--eval-only takes the model config from the checkpoint; drop the model.* settings "
                    f"({', '.join('model.' + k for k in merged['model'])})"
                )
            meta = load_checkpoint(checkpoint).get("meta", {})
            model_values = json.loads(meta.get("model_config", "{}"))
            if "train_config" in meta:  # every result-affecting train.* setting comes from the checkpoint
                explicit = merge_sections(*layers[1:])["train"]
                saved_train = json.loads(meta["train_config"])
                train_cfg = eval_train_config(saved_train, explicit, source=str(checkpoint))
        else:
            model_values = fill_from_features(entry.config_cls, merged["model"], reader.outputs)
        model_cfg = build_config(entry.config_cls, model_values, section="model")
    except (ConfigError, CheckpointError) as exc:
        raise click.UsageError(str(exc)) from exc
    return RunSpec(
        model=name, dataset=dataset, task=task, root=root, features=features, out=out, train=train_cfg,
        model_config=model_cfg, glove=glove, device=device, resume=resume, eval_only=eval_only,
        checkpoint=checkpoint, allow_missing_features=allow_missing_features, show_progress=progress,
        allow_feature_change=allow_feature_change, eval_name=eval_name,
    )


def _execute(spec: RunSpec) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    log = logging.getLogger("train")
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    try:
        result = run(spec)
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from exc
    except (FeatureMismatchError, CheckpointError, NonFiniteLossError, DatasetFormatError,
            ManifestError, GloveFormatError, DirectoryInUseError) as exc:
        raise click.ClickException(str(exc)) from exc
    finally:
        log.removeHandler(handler)
    metric = result["selection_metric"]
    base = ", ".join(f"{k} {v:.4f}" for k, v in result["baselines_test"].items()
                     if result["task_type"] != "moment" or k.endswith((metric, "mIoU")))
    click.echo(
        f"{spec.model} {spec.dataset}{'/' + spec.task if spec.task else ''}: val {metric} "
        f"{result['val'][metric]:.4f}, test {metric} {result['test'][metric]:.4f} ({base}); "
        f"best checkpoint {result['best_checkpoint']}; outputs in {eval_out_dir(spec)}"
    )


def build_cli() -> click.Group:
    """The ``vqa-train`` click group with one subcommand per registered model (explicit loop)."""
    group = click.Group(
        name="vqa-train",
        help="Train and evaluate video QA models from extracted features. "
        f"MODEL is one of: {', '.join(MODELS)}. Run `vqa-train MODEL --help` for its options and keys.",
        epilog=_datasets_epilog(),
    )
    for name, entry in MODELS.items():
        group.add_command(_model_command(name, entry))
    return group


def main(argv: list[str] | None = None) -> None:
    """Console entry point ``vqa-train``."""
    build_cli().main(args=argv, prog_name="vqa-train")


if __name__ == "__main__":
    main()
