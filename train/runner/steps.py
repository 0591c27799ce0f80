"""One run as named steps over one :class:`Run` record: :func:`open_run` (device, output directory, lock,
log), :func:`prepare` (model entry, dataset, features, resume and evaluation checks, text, datasets),
:func:`build` (collate, model, checkpoint meta, evaluation loaders), :func:`fit` (train with the hooks of
:func:`build_hooks`, or take the evaluated checkpoint), :func:`evaluate` (val and test of the selected
weights) and :func:`write` (predictions and ``metrics.json``). :func:`run` calls them in that order."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import yaml
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DistributedSampler

from extract.reader import FeatureReader
from models import get_model
from pipelines.atomic import directory_lock, write_json_atomic
from pipelines.datasets import get_dataset
from pipelines.version import toolkit_version
from train import frames as frame_data
from train.checkpoint import (
    CheckpointError,
    check_best,
    latest_checkpoint,
    load_checkpoint,
    model_digest,
    restore_best,
    restore_rng_state,
)
from train.config import ConfigError, config_to_dict
from train.data import check_feature_set
from train.distributed import (
    DistInfo,
    ShardedEvalSampler,
    all_gather_objects,
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
)
from train.loop import evaluate as evaluate_split
from train.losses import PredictionRecord
from train.moments import checkpoint_model_config
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
from train.recipes import get_recipe
from train.runner.checks import (
    check_eval_meta,
    check_glove,
    check_resume_config,
    official_text,
    run_text_encoder,
)
from train.runner.data import make_loader, recorded_stats
from train.runner.outputs import attach_log_file, finite, write_yaml
from train.runner.spec import (
    LOCK_NAME,
    RunInUseError,
    RunSpec,
    build_optimizer,
    build_scheduler,
    effective_config,
    eval_out_dir,
    resolve_device,
    seed_everything,
)
from train.tasks import RunData, TaskKind, get_task

log = logging.getLogger("train")


@dataclass
class Run:
    """What the steps of one run know, filled in step by step.

    ``open_run``: spec, dist, device, out, ckpt_dir. ``prepare``: entry, adapter, task_type, task, reader,
    features, feature_change, precision, conf, resume_from, saved_provenance, settings, prep_kwargs,
    prepared, question_vocab, answer_vocab, model_cfg, eval_ckpt, text_rule, text_enc, record, data.
    ``build``: collate, pin, model, meta, metric, mode, eval_loaders. ``fit``: writer, state, best_path.
    ``evaluate``: test_records.
    """

    spec: RunSpec
    dist: DistInfo
    device: torch.device
    out: Path
    ckpt_dir: Path
    entry: Any = None
    adapter: Any = None
    task_type: str = ""
    task: TaskKind | None = None
    reader: Any = None
    features: dict[str, Any] = field(default_factory=dict)
    feature_change: Any = None
    precision: str = "fp32"
    conf: dict[str, Any] = field(default_factory=dict)
    resume_from: Path | None = None
    saved_provenance: Any = None
    settings: Any = None  # the task kind's own section (moment retrieval: MomentConfig)
    prep_kwargs: dict[str, Any] = field(default_factory=dict)
    prepared: Any = None
    question_vocab: list[str] = field(default_factory=list)
    answer_vocab: list[str] | None = None
    model_cfg: Any = None
    eval_ckpt: dict[str, Any] | None = None
    text_rule: str | None = None
    text_enc: Any = None
    record: dict[str, Any] = field(default_factory=dict)
    data: RunData | None = None
    collate: Any = None
    pin: bool = False
    model: torch.nn.Module | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    metric: str = ""
    mode: str = ""
    eval_loaders: dict[str, Any] = field(default_factory=dict)
    writer: Any = None
    state: TrainState = field(default_factory=TrainState)
    best_path: Path | None = None
    test_records: list[PredictionRecord] = field(default_factory=list)

    @property
    def cfg(self):
        return self.spec.train


@dataclass(frozen=True)
class RunHooks:
    """The training hooks of a run, by name; :meth:`in_order` is the order the trainer calls them."""

    lr_schedule: LRSchedulerHook
    validation: EvalHook
    metrics_log: MetricsLogHook
    checkpoint: CheckpointHook
    early_stopping: EarlyStoppingHook

    def in_order(self) -> list[Any]:
        return [getattr(self, f.name) for f in dataclasses.fields(self)]


def run(spec: RunSpec) -> dict[str, Any]:
    """Train (or evaluate) one model on one dataset; see the package docstring for the outputs.

    Returns:
        The content of ``metrics.json``.

    Raises:
        ConfigError, FeatureMismatchError, CheckpointError: bad input, with a message saying what to do.
        train.loop.NonFiniteLossError: the loss became NaN/inf (names the epoch and step).
    """
    dist = init_distributed("cuda" if spec.device.startswith("cuda") or (
        spec.device == "auto" and torch.cuda.is_available()) else "cpu")
    stack = contextlib.ExitStack()  # unwinds: the TensorBoard writer, train.log, the lock
    try:
        r = open_run(spec, dist, stack)
        stack.callback(lambda: r.writer is not None and r.writer.close())
        prepare(r)
        build(r)
        fit(r)
        result = evaluate(r)
        write(r, result)
        barrier()
        return result
    finally:
        stack.close()
        cleanup_distributed()


def open_run(spec: RunSpec, dist: DistInfo, stack: contextlib.ExitStack) -> Run:
    """The device and the output directory: its lock and ``train.log`` (main process), torch's threads."""
    device = resolve_device(spec.device, dist)
    out = eval_out_dir(spec)
    if dist.is_main:
        stack.enter_context(directory_lock(
            out, LOCK_NAME, error=RunInUseError,
            message=f"{out} is in use by another vqa-train process; wait for it or choose another --out",
        ))
        handler = attach_log_file(out / "train.log")
        stack.callback(handler.close)
        stack.callback(log.removeHandler, handler)
    if spec.threads:
        torch.set_num_threads(spec.threads)
    log.info("torch CPU threads: %d per process", torch.get_num_threads())
    barrier()
    return Run(spec=spec, dist=dist, device=device, out=out, ckpt_dir=out / "checkpoints")


# ---------------------------------------------------------------------------------------------- prepare
def prepare(r: Run) -> None:
    """Everything the model and the loaders are built from, checked; ``config.yaml`` written."""
    _open_features(r)
    _check_resume(r)
    _prepare_text(r)
    r.model_cfg = r.spec.model_config
    if r.spec.eval_only:
        _take_checkpoint(r)
    eval_meta = r.eval_ckpt.get("meta", {}) if r.eval_ckpt is not None else None
    r.text_enc = run_text_encoder(r.spec, r.model_cfg, r.saved_provenance, eval_meta)
    check_glove(r.prepared.glove, r.cfg)
    r.record = build_record(r.features, r.prepared.glove, r.precision,
                            r.text_enc.record if r.text_enc else None)
    for line in describe(r.record):
        log.info(line)
    r.conf["provenance"] = r.record
    if r.dist.is_main:
        write_yaml(r.out / ("eval_config.yaml" if r.spec.eval_only else "config.yaml"), r.conf)
    if frame_data.uses_frames(r.model_cfg):  # raw frames (SiaSamRea end to end): train/frames.py
        r.model_cfg = dataclasses.replace(r.model_cfg, frames_dim=r.reader.backbone.feature_dim)
        r.data = frame_data.build_frame_data(r.spec, r.adapter, r.prepared, r.reader, text_encoder=r.text_enc,
                                             model_cfg=r.model_cfg, drop_unknown_answers=r.task.answer_vocab)
    else:
        r.data = r.task.build_datasets(r.spec, r.adapter, r.prepared, r.reader, r.entry, data=r.data,
                                       text_encoder=r.text_enc,
                                       recorded_stats=recorded_stats(r.resume_from, r.eval_ckpt))
    for name, ds in r.data.datasets.items():
        log.info("%s: %d questions", name, len(ds))


def _open_features(r: Run) -> None:
    """The model entry, the dataset adapter (its task type checked against the model) and the features
    (their set checked, every shard opened once and its checksum verified, the record of them)."""
    spec = r.spec
    r.entry = get_model(spec.model)
    r.adapter = get_dataset(spec.dataset)(spec.root, task=spec.task)
    r.task_type = r.adapter.task_type
    if r.task_type not in r.entry.task_types:
        raise ConfigError(
            f"model {spec.model!r} supports task types {r.entry.task_types}, but {spec.dataset}"
            f"{'/' + spec.task if spec.task else ''} is {r.task_type!r}"
        )
    r.task = get_task(r.task_type)
    if frame_data.uses_frames(spec.model_config):  # the videos themselves, not features
        r.reader = frame_data.VideoSource(r.adapter, spec.model_config,
                                          frame_data.load_backbone(spec.model_config))
        r.features = r.reader.record()
    else:
        r.reader = FeatureReader(spec.features)
        check_feature_set(r.reader, r.entry.feature_set, model=spec.model)
        r.reader.check_readable()  # here, not in a DataLoader worker (--num-workers > 0)
        r.reader.verify_checksums(r.out / "feature_cache" / "verified-shards.json")  # the fingerprint's
        r.features = feature_record(spec.features, r.reader)
    if r.features["random_weights"]:
        for line in RANDOM_WEIGHTS_BANNER.splitlines():
            log.warning(line)
    r.precision = train_precision(r.cfg.amp, r.device)
    r.conf = effective_config(spec, r.task_type)
    if frame_data.uses_frames(spec.model_config):  # the backbone's channels, as the model is built (prepare)
        r.conf["model"]["frames_dim"] = r.reader.backbone.feature_dim


def _check_resume(r: Run) -> None:
    """A new run refuses a directory that holds one; ``--resume`` compares the saved config, precision
    and features with this run's and finds the newest checkpoint."""
    spec, out, ckpt_dir = r.spec, r.out, r.ckpt_dir
    if not spec.resume and not spec.eval_only and latest_checkpoint(ckpt_dir) is not None:
        raise ConfigError(
            f"{out} already holds a run ({latest_checkpoint(ckpt_dir).name}); pass --resume to "
            f"continue it or choose a new --out"
        )
    if not spec.resume or spec.eval_only:
        return
    r.resume_from = latest_checkpoint(ckpt_dir)
    if (out / "config.yaml").exists():
        saved = yaml.safe_load((out / "config.yaml").read_text(encoding="utf-8"))
        check_resume_config(saved, r.conf, out / "config.yaml")
        r.saved_provenance = saved.get("provenance") or {}
        check_precision(saved.get("provenance"), (saved.get("train") or {}).get("amp", "bf16"),
                        r.cfg.amp, r.precision, device=r.device, source=str(out / "config.yaml"))
        r.feature_change = check_features(
            saved.get("provenance"), r.features, what="--resume", source=str(out / "config.yaml"),
            allow=spec.allow_feature_change,
        )
    if r.resume_from is None:
        log.warning("--resume: no checkpoint in %s; starting from scratch", ckpt_dir)


def _prepare_text(r: Run) -> None:
    """The encoded questions (and, for moment retrieval, the whole data side) and the vocabularies."""
    spec, cfg = r.spec, r.cfg
    vocab_size_cfg = cfg.answer_vocab_size if cfg.answer_vocab_size is not None else "default"
    r.prep_kwargs = dict(cache_dir=r.out / "text_cache", answer_vocab_size=vocab_size_cfg,
                         glove=spec.glove, max_question_len=cfg.max_question_len,
                         subtitles=get_recipe(spec.model).text_reading(spec.model_config).subtitles)
    r.settings = r.task.settings(spec)
    r.prepared, r.data = r.task.prepare_text(spec, r.adapter, r.reader, r.dist, r.settings, r.prep_kwargs)
    r.question_vocab, r.answer_vocab = r.task.vocabularies(r.prepared)


def _take_checkpoint(r: Run) -> None:
    """``--eval-only``: the checkpoint's model config, text reading (subtitles, a converted release's
    official vocabularies), features, settings and precision; contradictions refused."""
    spec, task_type = r.spec, r.task_type
    if spec.checkpoint is None:
        raise ConfigError("--eval-only needs --checkpoint PATH")
    r.eval_ckpt = load_checkpoint(spec.checkpoint)
    meta = r.eval_ckpt.get("meta", {})
    if meta.get("model_name") != spec.model:
        raise CheckpointError(
            f"{spec.checkpoint}: a checkpoint of model {meta.get('model_name')!r}, not {spec.model!r}"
        )
    model_cfg = checkpoint_model_config(meta, r.entry.config_cls, source=str(spec.checkpoint))
    recipe = get_recipe(spec.model)  # a moved directory, the inference-only settings of this evaluation
    moved = {k: v for k in recipe.path_keys if (v := getattr(spec.model_config, k, None))}
    r.model_cfg = dataclasses.replace(model_cfg, **moved,
                                      **{k: getattr(spec.model_config, k) for k in recipe.eval_keys})
    if r.task.reads_subtitles and bool(meta.get("subtitles")) != r.prep_kwargs["subtitles"]:
        r.prep_kwargs["subtitles"] = bool(meta.get("subtitles"))  # read as the checkpoint was trained
        r.prepared, _ = r.task.prepare_text(spec, r.adapter, r.reader, r.dist, r.settings, r.prep_kwargs)
        r.question_vocab = r.task.vocabularies(r.prepared)[0]
    r.feature_change = check_features(meta.get("provenance"), r.features, what="--eval-only",
                                      source=str(spec.checkpoint), allow=spec.allow_feature_change)
    if "converted_from" in meta:  # a released checkpoint: the official vocabularies and tokens
        r.prepared = official_text(spec, r.adapter, meta, task_type)
        r.text_rule = meta["text_rule"]
        r.question_vocab, r.answer_vocab = r.task.vocabularies(r.prepared)
    check_eval_meta(meta, spec, r.question_vocab)
    r.precision = recorded_precision(meta.get("provenance"), r.cfg.amp, r.device)  # as it was validated
    if meta.get("answer_vocab") is not None and meta["answer_vocab"] != (r.answer_vocab or []):
        raise CheckpointError(
            f"{spec.checkpoint}: its answer vocabulary ({len(meta['answer_vocab'])} answers) differs "
            f"from this dataset's ({len(r.answer_vocab or [])}); use the same dataset, task and "
            f"train.answer_vocab_size as the training run"
        )


# ---------------------------------------------------------------------------------------------- build
def build(r: Run) -> None:
    """The collate, the model (seeded), the checkpoint meta, the selection metric, the val/test loaders."""
    cfg, dist, task_type = r.cfg, r.dist, r.task_type
    frames = frame_data.uses_frames(r.model_cfg)
    r.collate = r.task.collate(r.reader)
    if frames:  # the same answers, plus the clips
        r.collate = frame_data.FrameCollate(answer_dtype=r.collate.answer_dtype)
    r.pin = r.device.type == "cuda"
    seed_everything(cfg.seed)
    r.model = r.entry.build(
        r.model_cfg,
        vocab_size=len(r.question_vocab),
        num_answers=len(r.answer_vocab or []),
        task_type=task_type,
        embeddings=r.prepared.embeddings,
        **({"text_encoder": r.text_enc.model} if r.text_enc is not None else {}),
        **({"backbone": r.reader.backbone.module, "pixel_mean": r.reader.backbone.preprocessing.mean,
            "pixel_std": r.reader.backbone.preprocessing.std} if frames else {}),
    ).to(r.device)
    if dist.rank > 0:  # different dropout streams per process; rank 0 keeps the single-process stream
        seed_everything(cfg.seed + 1_000_003 * dist.rank)
    r.meta = checkpoint_meta(r)
    r.metric, r.mode = r.task.selection
    r.eval_loaders = {
        name: make_loader(r.data.datasets[name], batch_size=cfg.effective_eval_batch_size, collate=r.collate,
                          cfg=cfg, pin=r.pin, sampler=ShardedEvalSampler(
                              len(r.data.datasets[name]), rank=dist.rank, world_size=dist.world_size))
        for name in ("val", "test")
    }


def checkpoint_meta(r: Run) -> dict[str, Any]:
    """The ``meta`` every checkpoint of the run carries (self-contained: ``vqa-answer`` needs no more)."""
    cfg, spec, data = r.cfg, r.spec, r.data
    meta = {
        "model_name": spec.model,
        "task_type": r.task_type,
        "model_config": json.dumps(config_to_dict(r.model_cfg), sort_keys=True),
        "train_config": json.dumps(config_to_dict(cfg), sort_keys=True),
        "answer_vocab": r.answer_vocab or [],
        "question_vocab": r.question_vocab,
        "dataset": spec.dataset,
        "task": spec.task,
        "provenance": r.record,
        "toolkit_version": toolkit_version(),
        "subtitles": any(getattr(sp, "subtitles", None) is not None for sp in r.prepared.splits.values()),
        **self_contained_meta(data.feature_stats, cfg.max_question_len, data.feature_projection,
                              data.query_parse),
    }
    meta.update(r.task.checkpoint_meta(r.settings))
    return meta


def run_eval(r: Run, split: str) -> tuple[dict[str, float], list[PredictionRecord]]:
    """The metrics and prediction records of the model as it is on ``split`` (``val`` or ``test``)."""
    return evaluate_split(
        r.model, r.eval_loaders[split], task_type=r.task_type, device=r.device, amp=r.precision,
        answer_vocab=r.answer_vocab, order=r.data.datasets[split].qids,
        show_progress=r.spec.show_progress and r.dist.is_main, desc=split, moment=r.task.eval_options(r.cfg),
    )


# ---------------------------------------------------------------------------------------------- fit
def fit(r: Run) -> None:
    """Train and load the best validation epoch's weights, or (``--eval-only``) load the checkpoint's."""
    r.best_path = r.ckpt_dir / "best.pt"
    if r.spec.eval_only:
        r.model.load_state_dict(r.eval_ckpt["model"])
        r.best_path = Path(r.spec.checkpoint)
        if "state" in r.eval_ckpt:
            r.state = TrainState.from_dict(r.eval_ckpt["state"])
        return
    cfg, dist = r.cfg, r.dist
    if cfg.batch_size % (dist.world_size * cfg.grad_accum):
        raise ConfigError(
            f"train.batch_size={cfg.batch_size} is the global batch; it must be divisible by the "
            f"number of processes ({dist.world_size}) times train.grad_accum ({cfg.grad_accum})"
        )
    optimizer = build_optimizer(r.model, cfg)
    scheduler = build_scheduler(optimizer, cfg)
    ddp_model: torch.nn.Module = r.model
    if dist.distributed:
        ddp_model = DistributedDataParallel(
            r.model, device_ids=[dist.local_rank] if r.device.type == "cuda" else None,
            find_unused_parameters=cfg.ddp_find_unused_parameters,
        )
    train_ds = r.data.datasets["train"]
    sampler_cls = frame_data.ClipSeedSampler if frame_data.uses_frames(r.model_cfg) else DistributedSampler
    sampler = sampler_cls(train_ds, num_replicas=dist.world_size, rank=dist.rank,
                          shuffle=True, seed=cfg.seed, drop_last=False)
    gen = torch.Generator()
    micro_batch = cfg.batch_size // (dist.world_size * cfg.grad_accum)
    train_loader = make_loader(train_ds, batch_size=micro_batch, sampler=sampler,
                               collate=r.collate, cfg=cfg, pin=r.pin, generator=gen)
    r.writer = _tensorboard_writer(r, purge_step=None)
    hooks = build_hooks(r, scheduler)
    trainer = Trainer(
        ddp_model, optimizer, train_loader, task_type=r.task_type, device=r.device, amp=r.precision,
        grad_clip=cfg.grad_clip, margin=cfg.hinge_margin, hinge_reduction=cfg.hinge_reduction,
        hooks=hooks.in_order(), loader_generator=gen,
        seed=cfg.seed, show_progress=r.spec.show_progress and dist.is_main,
        loss_fn=r.task.loss_fn(r.settings), grad_accum=cfg.grad_accum,
    )
    if r.resume_from is not None:
        _resume(r, trainer, optimizer, scheduler)
    if r.writer is not None and trainer.state.global_step:  # drop the events logged after the checkpoint
        r.writer.close()
        r.writer = hooks.metrics_log.writer = _tensorboard_writer(r, purge_step=trainer.state.global_step + 1)
    log.info("training %s on %s%s (%s) for %d epochs on %s, %d process(es)", r.spec.model, r.spec.dataset,
             f"/{r.spec.task}" if r.spec.task else "", r.task_type, cfg.epochs, r.device, dist.world_size)
    if cfg.grad_accum > 1:
        log.info("gradient accumulation: %d micro-batches of %d questions per process and optimiser step",
                 cfg.grad_accum, micro_batch)
    r.state = trainer.train(cfg.epochs)
    barrier()
    r.best_path = load_best(r.model, r.ckpt_dir, r.state, r.metric, dist)


def build_hooks(r: Run, scheduler: Any) -> RunHooks:
    """The trainer's hooks: the schedule, validation after each epoch, the metrics log, checkpoints and
    early stopping."""
    cfg, dist = r.cfg, r.dist
    return RunHooks(
        lr_schedule=LRSchedulerHook(scheduler, per_step=cfg.scheduler == "inverse_sqrt"),
        validation=EvalHook(lambda: run_eval(r, "val")[0], metric=r.metric, mode=r.mode),
        metrics_log=MetricsLogHook(r.out / "metrics.jsonl", r.writer, log_every=cfg.log_every,
                                   enabled=dist.is_main),
        checkpoint=CheckpointHook(r.ckpt_dir, model=r.model, scheduler=scheduler, meta=r.meta,
                                  keep=cfg.keep_checkpoints, is_main=dist.is_main),
        early_stopping=EarlyStoppingHook(cfg.patience),
    )


def _tensorboard_writer(r: Run, *, purge_step: int | None) -> Any:
    """The main process's TensorBoard writer (None on the others)."""
    if not r.dist.is_main:
        return None
    from torch.utils.tensorboard import SummaryWriter

    if purge_step is None:
        return SummaryWriter(str(r.out / "tensorboard"))
    return SummaryWriter(str(r.out / "tensorboard"), purge_step=purge_step)


def _resume(r: Run, trainer: Trainer, optimizer: torch.optim.Optimizer, scheduler: Any) -> None:
    """The newest checkpoint's model, optimiser, schedule, scaler, state and RNG streams."""
    dist = r.dist
    ck = load_checkpoint(r.resume_from)
    r.model.load_state_dict(ck["model"])
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
    log.info("resumed from %s (epoch %d)", r.resume_from, trainer.state.epoch)
    restore_best_file(r.ckpt_dir, trainer.state, dist)  # before pruning can take its epoch's file


# ---------------------------------------------------------------------------------------------- evaluate
def evaluate(r: Run) -> dict[str, Any]:
    """Val and test of the selected weights, the baselines and the record: ``metrics.json``'s content.
    The test predictions are kept in ``r.test_records`` for :func:`write`."""
    spec, state = r.spec, r.state
    evaluated_epoch = r.eval_ckpt.get("epoch") if spec.eval_only else (
        state.best_epoch if state.best_epoch is not None else state.epoch)
    val_metrics, _ = run_eval(r, "val")
    test_metrics, r.test_records = run_eval(r, "test")
    result = {
        "model": spec.model,
        "dataset": spec.dataset,
        "task": spec.task,
        "task_type": r.task_type,
        "selection_metric": r.metric,
        "selection_mode": r.mode,
        "best_epoch": state.best_epoch,
        "best_checkpoint": str(r.best_path),
        "best_checkpoint_epoch": evaluated_epoch,
        "best_checkpoint_sha256": model_digest(r.model.state_dict()),  # the weights evaluated below
        "epochs_completed": state.epoch,
        "stopped_early": bool(state.stop),
        "val": val_metrics,
        "test": test_metrics,
        "baselines_test": r.task.baselines(r.data, r.cfg),
        **r.task.result_extras(r.cfg),
        "dropped_questions": r.data.dropped,
        "eval_only": spec.eval_only,
        "provenance": r.record,
    }
    if spec.eval_only:
        result["checkpoint"] = str(spec.checkpoint)
    if r.text_rule is not None:
        result["text_rule"] = r.text_rule
    if r.feature_change is not None:
        result["feature_change"] = r.feature_change
    skipped = sum(all_gather_objects(state.skipped_items))  # every process's training items
    if skipped:
        result["skipped_training_items"] = skipped  # their video failed to decode (train/frames.py)
    return result


# ---------------------------------------------------------------------------------------------- write
def write(r: Run, result: dict[str, Any]) -> None:
    """The test predictions and ``metrics.json`` (main process)."""
    if not r.dist.is_main:
        return
    r.task.write_predictions(r.out, "test", r.test_records)
    write_json_atomic(r.out / "metrics.json", finite(result))
    log.info("val %s %.4f, test %s %.4f (best epoch %s)", r.metric, result["val"][r.metric], r.metric,
             result["test"][r.metric], r.state.best_epoch)


def restore_best_file(ckpt_dir: Path, state: TrainState, dist: DistInfo) -> None:
    """Repair ``best.pt`` from the epoch checkpoints and the recorded best epoch (main process writes)."""
    if state.best_epoch is not None and dist.is_main:
        note = restore_best(ckpt_dir, state.best_epoch, state.best_sha256)
        if note:
            log.warning("%s", note)
    barrier()


def load_best(model: torch.nn.Module, ckpt_dir: Path, state: TrainState, metric: str,
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
    restore_best_file(ckpt_dir, state, dist)
    best_path = ckpt_dir / "best.pt"
    problem = check_best(best_path, state.best_epoch, state.best_sha256)
    if problem is not None:  # changed under the run after the repair: refuse rather than report it
        raise CheckpointError(f"{best_path}: {problem}, not the best epoch {state.best_epoch}; train again")
    model.load_state_dict(load_checkpoint(best_path)["model"])
    return best_path

