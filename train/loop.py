"""The one training loop shared by every model, and its hooks.

Like detectron2's ``SimpleTrainer``, :meth:`Trainer.run_step` is short: batch -> model -> loss dict ->
sum -> backward -> clip -> optimiser step. With gradient accumulation (``train.grad_accum`` = N) a step
is N micro-batches, each loss weighted by its share of the step's questions, so that N micro-batches of
B/N give the gradient of one batch of B (up to float rounding; BatchNorm and dropout see the smaller
batches). Steps never straddle epochs: an epoch's last step takes the micro-batches that are left, as the
last batch of B would, so checkpoints (after each epoch) always fall on optimiser-step boundaries.

Everything else (learning-rate schedule, validation and model selection, logging, checkpoints, early
stopping) is a :class:`HookBase` subclass called at the start/end of training, at the end of each
optimiser step and at the end of each epoch, in list order.

The state that must survive a restart lives in :class:`TrainState` and is saved in checkpoints.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from tqdm import tqdm

from extract.accel import autocast as accel_autocast
from extract.accel import resolve_precision
from pipelines.atomic import atomic_path
from train.checkpoint import (
    capture_rng_state,
    checkpoint_path,
    model_digest,
    prune_checkpoints,
    save_checkpoint,
)
from train.distributed import all_gather_objects, any_flag
from train.losses import Evaluation, PredictionRecord
from train.tasks import get_task

__all__ = [
    "CheckpointHook",
    "EarlyStoppingHook",
    "EvalHook",
    "HookBase",
    "LRSchedulerHook",
    "MetricsLogHook",
    "NonFiniteLossError",
    "RunDirError",
    "Trainer",
    "TrainState",
    "autocast_context",
    "evaluate",
    "move_to_device",
]

log = logging.getLogger("train")


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or infinite; the message names the epoch and step."""


class RunDirError(RuntimeError):
    """A file of the run directory is damaged beyond what resuming repairs (names the file and line)."""


@dataclass
class TrainState:
    """Loop state saved in every checkpoint. ``epoch`` counts completed epochs."""

    epoch: int = 0
    global_step: int = 0
    best_metric: float | None = None
    best_epoch: int | None = None
    best_sha256: str | None = None  # train.checkpoint.model_digest of the best epoch's weights
    bad_epochs: int = 0
    improved: bool = False
    stop: bool = False
    last_val: dict[str, float] = field(default_factory=dict)
    last_train: dict[str, float] = field(default_factory=dict)
    skipped_items: int = 0  # training items whose video failed to decode (``skipped_qids`` of the batches)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> TrainState:
        return cls(**dict(d))


def move_to_device(batch: Mapping[str, Any], device: torch.device) -> dict[str, Any]:
    """Copy a batch's tensors to ``device`` (non-blocking from pinned memory); lists stay as they are."""
    return {
        k: v.to(device, non_blocking=True) if isinstance(v, Tensor) else v for k, v in batch.items()
    }


def autocast_context(device: torch.device, amp: str):
    """The autocast of ``amp`` (``train.amp``, resolved for ``device`` by ``extract.accel``): bf16 on CPU or
    CUDA, fp16 on CUDA; a no-op for fp32 (and ``none``)."""
    return accel_autocast(device, resolve_precision(amp, device))


class HookBase:
    """A training hook. ``self.trainer`` is set by :class:`Trainer`."""

    trainer: Trainer

    def before_train(self) -> None: ...

    def after_step(self) -> None: ...

    def after_epoch(self) -> None: ...

    def after_train(self) -> None: ...


class Trainer:
    """Runs epochs of ``run_step`` over a loader and calls the hooks.

    Args:
        model: the module (possibly DDP-wrapped); called as ``model(batch) -> dict``.
        optimizer: the optimiser.
        train_loader: yields collated batches; its sampler's ``set_epoch`` is called every epoch.
        task_type: ``"open"``, ``"mc"`` or ``"count"`` (selects the loss).
        device: where batches go.
        amp: the resolved precision: ``"bf16"``, ``"fp32"`` or ``"fp16"`` (CUDA only).
        grad_clip: max global gradient norm, or None.
        margin: hinge margin (multiple choice).
        hinge_reduction: ``"sum"`` or ``"mean"`` (multiple choice, ``train.tasks.qa_losses.hinge_loss``).
        hooks: called in order.
        loader_generator: reseeded with ``seed + epoch`` before each epoch (DataLoader worker seeds).
        seed: base seed for shuffling and workers.
        show_progress: show a tqdm bar.
        grad_accum: micro-batches per optimiser step (the loader yields micro-batches); 1: one batch a step.
    """

    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        train_loader: Iterable[Mapping[str, Any]],
        *,
        task_type: str,
        device: torch.device,
        amp: str = "none",
        grad_clip: float | None = None,
        margin: float = 1.0,
        hinge_reduction: str = "sum",
        hooks: Sequence[HookBase] = (),
        loader_generator: torch.Generator | None = None,
        seed: int = 0,
        show_progress: bool = True,
        loss_fn: Callable[[Mapping[str, Tensor], Mapping[str, Any]], dict[str, Tensor]] | None = None,
        grad_accum: int = 1,
    ) -> None:
        if grad_accum < 1:
            raise ValueError(f"grad_accum must be >= 1, got {grad_accum}")
        self.grad_accum = grad_accum
        self.model = model
        self.optimizer = optimizer
        self.train_loader = train_loader
        self.task_type = task_type
        self.device = device
        self.amp = amp
        self.grad_clip = grad_clip
        self.seed = seed
        self.loader_generator = loader_generator
        self.show_progress = show_progress
        self.loss_fn = loss_fn or (lambda out, batch: get_task(task_type).losses(
            out, batch, margin=margin, hinge_reduction=hinge_reduction))
        use_scaler = device.type == "cuda" and amp == "fp16"
        self.scaler = torch.amp.GradScaler("cuda", enabled=use_scaler)
        self.state = TrainState()
        self.epoch_step = 0
        self.last_losses: dict[str, float] = {}
        self.hooks = list(hooks)
        for h in self.hooks:
            h.trainer = self

    # ------------------------------------------------------------------ the step
    def run_step(self, batch: Mapping[str, Any] | Sequence[Mapping[str, Any]]) -> dict[str, float]:
        """One optimisation step on one batch, or on a list of micro-batches (gradient accumulation).

        Returns the step's loss values (floats): the question-weighted mean over its micro-batches.

        Raises:
            NonFiniteLossError: when the summed loss is NaN or infinite (on any process).
        """
        micro = [batch] if isinstance(batch, Mapping) else list(batch)
        self.state.skipped_items += sum(len(mb.get("skipped_qids", ())) for mb in micro)
        sizes = [batch_questions(mb) for mb in micro]
        self.optimizer.zero_grad(set_to_none=True)
        step: dict[str, float] = {}
        for i, mb in enumerate(micro):
            weight = sizes[i] / sum(sizes)  # 1.0 exactly for a single batch
            with self._sync_unless(i < len(micro) - 1):  # DDP all-reduces on the last micro-batch only
                losses = self._backward(mb, weight)
            for k, v in losses.items():
                step[k] = step.get(k, 0.0) + weight * v
        if self.grad_clip is not None:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        return step

    def _backward(self, batch: Mapping[str, Any], weight: float) -> dict[str, float]:
        """Forward one (micro-)batch and add ``weight`` times its summed loss's gradient."""
        batch = move_to_device(batch, self.device)
        with autocast_context(self.device, self.amp):
            outputs = self.model(batch)
        losses = self.loss_fn(outputs, batch)
        total = sum(losses.values())
        if any_flag(not bool(torch.isfinite(total.detach()).item()), self.device):
            values = ", ".join(f"{k}={float(v.detach()):.6g}" for k, v in losses.items())
            raise NonFiniteLossError(
                f"non-finite loss at epoch {self.state.epoch + 1}, step {self.epoch_step} "
                f"(global step {self.state.global_step + 1}): {values}; the run is stopped. Lower train.lr, "
                f"set train.grad_clip, or check the features for NaN/inf values"
            )
        self.scaler.scale(total * weight if weight != 1.0 else total).backward()
        return {k: float(v.detach()) for k, v in losses.items()} | {"loss": float(total.detach())}

    def _sync_unless(self, accumulating: bool) -> contextlib.AbstractContextManager:
        """DDP's ``no_sync`` while gradients still accumulate; nothing otherwise."""
        no_sync = getattr(self.model, "no_sync", None)
        return no_sync() if accumulating and no_sync is not None else contextlib.nullcontext()

    # ------------------------------------------------------------------ epochs
    def train(self, max_epochs: int) -> TrainState:
        """Train from ``state.epoch`` (0, or the resumed epoch) up to ``max_epochs`` epochs or a stop."""
        for h in self.hooks:
            h.before_train()
        while self.state.epoch < max_epochs and not self.state.stop:
            self._train_one_epoch(max_epochs)
            for h in self.hooks:
                h.after_epoch()
        for h in self.hooks:
            h.after_train()
        return self.state

    def _train_one_epoch(self, max_epochs: int) -> None:
        epoch = self.state.epoch  # 0-based index of the epoch being run
        sampler = getattr(self.train_loader, "sampler", None)
        if hasattr(sampler, "set_epoch"):
            sampler.set_epoch(epoch)
        if self.loader_generator is not None:
            self.loader_generator.manual_seed(self.seed * 100_003 + epoch)
        self.model.train()
        sums: dict[str, float] = {}
        n = 0
        self.epoch_step = 0
        bar = tqdm(
            self.train_loader,
            desc=f"epoch {epoch + 1}/{max_epochs}",
            disable=not self.show_progress,
            leave=False,
            dynamic_ncols=True,
        )
        for group in batched(bar, self.grad_accum):
            self.epoch_step += 1
            losses = self.run_step(group)
            self.state.global_step += 1
            self.last_losses = losses
            for k, v in losses.items():
                sums[k] = sums.get(k, 0.0) + v
            n += 1
            postfix = {"loss": f"{losses['loss']:.4f}"}  # this batch's training loss
            postfix.update({f"val_{k}": f"{v:.4f}" for k, v in list(self.state.last_val.items())[:1]})
            bar.set_postfix(postfix)
            for h in self.hooks:
                h.after_step()
        bar.close()
        self.state.epoch = epoch + 1
        # the epoch's mean over every process's batches (each process saw a different shard of the data)
        parts = all_gather_objects((sums, n))
        n_all = sum(part_n for _, part_n in parts)
        totals = {k: sum(part_sums.get(k, 0.0) for part_sums, _ in parts) for k in sums}
        self.state.last_train = {k: v / max(n_all, 1) for k, v in totals.items()}


def batched(batches: Iterable[Any], n: int) -> Iterator[list[Any]]:
    """Consecutive groups of ``n`` items; the last group holds what is left (one optimiser step each)."""
    group: list[Any] = []
    for item in batches:
        group.append(item)
        if len(group) == n:
            yield group
            group = []
    if group:
        yield group


def batch_questions(batch: Mapping[str, Any]) -> int:
    """The number of questions in a collated batch (its ``qid`` list, else the first tensor's rows)."""
    if "qid" in batch:
        return len(batch["qid"])
    return next(int(v.shape[0]) for v in batch.values() if isinstance(v, Tensor) and v.dim() > 0)


def evaluate(
    model: nn.Module,
    loader: Iterable[Mapping[str, Any]],
    *,
    task_type: str,
    device: torch.device,
    amp: str = "none",
    answer_vocab: Sequence[str] | None = None,
    order: Sequence[str] | None = None,
    show_progress: bool = False,
    desc: str = "eval",
    moment: Mapping[str, Any] | None = None,
) -> tuple[dict[str, float], list[PredictionRecord]]:
    """Evaluate ``model`` over ``loader`` (this process's shard) and gather every process's records.

    Args:
        model: the bare module (not the DDP wrapper).
        loader: evaluation batches.
        task_type: ``"open"``, ``"mc"`` or ``"count"``.
        device: where batches go.
        amp: the resolved precision (see ``Trainer``).
        answer_vocab: open-ended answer words for the exported predictions.
        order: the split's question ids; gathered records are returned in this order.
        show_progress: show a tqdm bar.
        desc: the bar's label.
        moment: moment retrieval's ``nms_threshold`` and ``iou`` formula (``train.tasks.TaskKind.predict``).

    Returns:
        ``(metrics, records)``: the metrics over the whole split (each question once) and the records.
    """
    was_training = model.training
    model.eval()
    ev = Evaluation(get_task(task_type), answer_vocab, **(moment or {}))
    skipped: list[str] = []  # questions whose video failed to decode (the frame data path)
    with torch.no_grad():
        for batch in tqdm(loader, desc=desc, disable=not show_progress, leave=False, dynamic_ncols=True):
            skipped += batch.get("skipped_qids", ())
            batch = move_to_device(batch, device)
            with autocast_context(device, amp):
                outputs = model(batch)
            ev.update(outputs, batch)
    model.train(was_training)
    merged: dict[str, PredictionRecord] = {}
    for part in all_gather_objects(ev.records):
        for rec in part:
            merged.setdefault(rec.qid, rec)
    if order is not None:
        records = [merged[q] for q in order if q in merged]
    else:
        records = list(merged.values())
    ev.records = records
    metrics = ev.metrics()
    skipped_all = {q for part in all_gather_objects(skipped) for q in part}
    if skipped_all:  # recorded beside the metrics: they are over the other questions
        log.warning("%s: %d question(s) skipped, their video failed to decode, e.g. %s", desc,
                    len(skipped_all), min(skipped_all))
        metrics["skipped_questions"] = len(skipped_all)
    return metrics, records


# ---------------------------------------------------------------------- hooks
class LRSchedulerHook(HookBase):
    """Steps an epoch-based learning-rate scheduler after every epoch."""

    def __init__(self, scheduler: torch.optim.lr_scheduler.LRScheduler | None, *,
                 per_step: bool = False) -> None:
        self.scheduler = scheduler
        self.per_step = per_step  # per-update schedules (warm-up + inverse square root)

    def after_step(self) -> None:
        if self.scheduler is not None and self.per_step:
            self.scheduler.step()

    def after_epoch(self) -> None:
        if self.scheduler is not None and not self.per_step:
            self.scheduler.step()


class EvalHook(HookBase):
    """Evaluates on the validation split after every epoch and tracks the best epoch.

    Args:
        eval_fn: returns the validation metrics dict.
        metric: the selection metric name (``accuracy`` or ``mse``).
        mode: ``"max"`` or ``"min"``.
    """

    def __init__(self, eval_fn: Callable[[], dict[str, float]], *, metric: str, mode: str) -> None:
        self.eval_fn, self.metric, self.mode = eval_fn, metric, mode

    def after_epoch(self) -> None:
        st = self.trainer.state
        metrics = self.eval_fn()
        st.last_val = metrics
        value = metrics[self.metric]
        better = (
            st.best_metric is None
            or (self.mode == "max" and value > st.best_metric)
            or (self.mode == "min" and value < st.best_metric)
        )
        st.improved = bool(better and math.isfinite(value))
        if st.improved:
            st.best_metric, st.best_epoch, st.bad_epochs = float(value), st.epoch, 0
        else:
            st.bad_epochs += 1
        log.info(
            "epoch %d: train loss %.4f, val %s %.4f (best %.4f at epoch %s)",
            st.epoch, st.last_train.get("loss", math.nan), self.metric, value,
            st.best_metric if st.best_metric is not None else math.nan, st.best_epoch,
        )


class EarlyStoppingHook(HookBase):
    """Stops training after ``patience`` epochs without a validation improvement."""

    def __init__(self, patience: int | None) -> None:
        self.patience = patience

    def _check(self) -> None:
        st = self.trainer.state
        if self.patience is not None and st.bad_epochs >= self.patience and not st.stop:
            st.stop = True
            log.info(
                "early stopping after epoch %d: no val improvement for %d epochs", st.epoch, st.bad_epochs
            )

    def before_train(self) -> None:
        self._check()

    def after_epoch(self) -> None:
        self._check()


class MetricsLogHook(HookBase):
    """Appends one line per epoch to ``metrics.jsonl`` and writes TensorBoard scalars (main process).

    Args:
        jsonl_path: ``RUN/metrics.jsonl``.
        writer: a ``SummaryWriter`` or None (non-main processes).
        log_every: steps between step-level scalars.
        enabled: False on non-main processes.
    """

    def __init__(self, jsonl_path: Path, writer: Any, *, log_every: int, enabled: bool = True) -> None:
        self.path, self.writer, self.log_every, self.enabled = Path(jsonl_path), writer, log_every, enabled
        self.t0 = time.time()

    def before_train(self) -> None:
        self.t0 = time.time()
        if self.enabled:
            keep_epochs(self.path, self.trainer.state.epoch)

    def after_step(self) -> None:
        st = self.trainer.state
        if self.enabled and self.writer is not None and st.global_step % self.log_every == 0:
            for k, v in self.trainer.last_losses.items():
                self.writer.add_scalar(f"train/{k}", v, st.global_step)
            self.writer.add_scalar("train/lr", self.trainer.optimizer.param_groups[0]["lr"], st.global_step)

    def after_epoch(self) -> None:
        if not self.enabled:
            return
        st = self.trainer.state
        row = {
            "epoch": st.epoch,
            "global_step": st.global_step,
            "lr": self.trainer.optimizer.param_groups[0]["lr"],
            "train": st.last_train,
            "val": st.last_val,
            "best_epoch": st.best_epoch,
            "best_metric": st.best_metric,
            "seconds": round(time.time() - self.t0, 3),
        }
        self.t0 = time.time()
        try:
            with open(self.path, "a", encoding="utf-8") as fh:
                fh.write(json.dumps(row, sort_keys=True) + "\n")
        except OSError as err:  # a full disk: name the file (the error of a failed flush names none)
            raise OSError(err.errno, err.strerror, str(self.path)) from None
        if self.writer is not None:
            for k, v in st.last_train.items():
                self.writer.add_scalar(f"epoch/train_{k}", v, st.epoch)
            for k, v in st.last_val.items():
                self.writer.add_scalar(f"epoch/val_{k}", v, st.epoch)
            self.writer.flush()


def keep_epochs(jsonl_path: Path, epoch: int) -> None:
    """Drop the lines of ``metrics.jsonl`` for epochs after ``epoch`` (written before a crash).

    A torn last line (the process died while appending it) is dropped too: its epoch has no checkpoint
    yet and is run again. A damaged line before the last is an error naming the line.
    """
    if not jsonl_path.exists():
        return
    lines = [ln for ln in jsonl_path.read_bytes().decode("utf-8", "replace").splitlines() if ln.strip()]
    rows = []
    for number, line in enumerate(lines, 1):
        try:
            row = json.loads(line)
            rows.append((int(row["epoch"]), line))
        except (ValueError, KeyError, TypeError):
            if number < len(lines):
                raise RunDirError(
                    f"{jsonl_path} line {number} is not a metrics record (the file was damaged); fix or "
                    "delete that line and run again"
                ) from None
            log.warning("%s: dropped a torn last line (written when the run was interrupted)", jsonl_path)
    kept = [ln for ep, ln in rows if ep <= epoch]
    if len(kept) != len(lines):
        with atomic_path(jsonl_path) as tmp:
            tmp.write_text("".join(k + "\n" for k in kept), encoding="utf-8")


class CheckpointHook(HookBase):
    """Writes ``epoch-NNNN.pt`` after every epoch and then ``best.pt`` when validation improved.

    The state saved in ``epoch-NNNN.pt`` already names the best epoch and the digest of its weights, so
    a crash between the two writes is repaired on resume (``train.checkpoint.restore_best``).

    Args:
        ckpt_dir: ``RUN/checkpoints``.
        model: the bare module (its ``state_dict`` has no DDP prefix).
        scheduler: the LR scheduler (or None).
        meta: plain metadata stored in every checkpoint (model name, configs, vocabulary).
        keep: number of per-epoch checkpoints kept.
        is_main: only the main process writes; every process contributes its RNG state.
    """

    def __init__(
        self,
        ckpt_dir: Path,
        *,
        model: nn.Module,
        scheduler: Any,
        meta: dict[str, Any],
        keep: int,
        is_main: bool,
    ) -> None:
        self.dir, self.model, self.scheduler = Path(ckpt_dir), model, scheduler
        self.meta, self.keep, self.is_main = meta, keep, is_main

    def state_dict(self) -> dict[str, Any]:
        tr = self.trainer
        return {
            "model": self.model.state_dict(),
            "optimizer": tr.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict() if self.scheduler is not None else {},
            "scaler": tr.scaler.state_dict(),
            "rng": all_gather_objects(capture_rng_state()),
            "epoch": tr.state.epoch,
            "state": tr.state.to_dict(),
            "meta": self.meta,
        }

    def after_epoch(self) -> None:
        st = self.trainer.state
        if st.improved:
            st.best_sha256 = model_digest(self.model.state_dict())
        ckpt = self.state_dict()  # every process takes part in the RNG gather
        if not self.is_main:
            return
        save_checkpoint(checkpoint_path(self.dir, st.epoch), ckpt)
        if st.improved:
            best = {"model": ckpt["model"], "epoch": st.epoch, "state": ckpt["state"], "meta": self.meta,
                    "model_sha256": st.best_sha256}
            save_checkpoint(self.dir / "best.pt", best)
        prune_checkpoints(self.dir, self.keep)
