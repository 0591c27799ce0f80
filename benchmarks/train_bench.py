"""Training-step throughput of every model in fp32 and bf16, beside its official code (run by hand).

One training step = forward (under the autocast being measured) + loss + backward + optimizer step on a
synthetic batch at the paper's sizes, 2 CPU threads by default:

- **mspan**: N = 16 frames of 2048-d appearance and motion, K = 8 scales, T = 3 iterations, one weight set
  per iteration (the default), batch 64, FrameQA-style open head (5000-word vocabulary, 1000 answers),
  Adam; official code: gzcsudo/MSPAN-VideoQA (its ``VideoQANetwork``, cross-entropy, Adam);
- **masn**: batch 32, T = 20 frames, 10 objects a frame, 2048-d appearance / motion / object features,
  d = 512, 4 BAN glimpses, open head, Adam; official code: ahjeongseo/MASN-pytorch (``model.masn.MASN``;
  GitHub also serves it as ajseo95/MASN-pytorch);
- **cmin**: ``benchmarks/cmin_bench.py``: T = 200 steps of 500-d clips, 20-word queries, the 7
  ActivityNet widths, d = 512, batch 64, AdamW; official code: ikuinen/CMIN_moment_retrieval (its model,
  its Adam and its inverse-sqrt schedule, with the run-time workarounds cmin_bench describes);
- **siasamrea**: paper defaults (H = 768, 2 layers, 8 frames a clip, N = 8 siamese clips), 64 feature
  frames a video, batch 16; no public code, so the base network (N = 0) runs beside it instead;
- **siasamrea-e2e**: SiaSamRea end to end from raw frames (``benchmarks/e2e_bench.py``): ResNet-50 and a
  BERT-base-shaped text encoder at a small input (112 px, 2 frames a clip, N = 2, batch 2), gradient
  checkpointing off and on, and the frames decoded/s of its data path in the setting.

Every contender of a model (ours, the official code) runs in every precision (``--precision``, default
``fp32,bf16``: ``torch.autocast`` in bf16 around the forward and the loss, applied here to the official
code as well), and the timed steps alternate round by round (ours fp32, ours bf16, official fp32, ...),
so that all of them see the same machine load and the ratios hold on a shared machine. The header says
whether this CPU computes bf16 natively (``extract.accel.bf16_native``: AVX-512 BF16 or AMX); where it
does not, bf16 is emulated and many times slower.

    python benchmarks/train_bench.py --official-dir /tmp/official      # every model, fp32 and bf16
    python benchmarks/train_bench.py --model masn --official-dir /tmp/official/MASN-pytorch
    python benchmarks/train_bench.py --model mspan --precision fp32 --steps 1
    python benchmarks/train_bench.py --device cuda --steps 20 --warmup 3

``--official-dir`` (repeatable) is either a model's clone or a directory holding clones under their
GitHub names (``MSPAN-VideoQA``, ``MASN-pytorch``, ``CMIN_moment_retrieval``); a model whose official
code is not found there is timed alone. Get them with ``git clone https://github.com/gzcsudo/MSPAN-VideoQA``
(and the other two) into a directory of your own; nothing of them is part of this repository, and
nothing in the clones is modified (the workarounds are applied in this process while the benchmark
runs). Each directory is put on ``sys.path`` as a string for as long as its model is measured, and its
modules are removed from ``sys.modules`` afterwards (MSPAN's and CMIN's both have a ``utils``).

Prints a header (machine, native bf16, load), one markdown row per model and precision for
docs/benchmarks.md, and a closing summary of the ratios.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime as dt
import importlib
import os
import platform
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parent))  # cmin_bench beside this file
sys.path.insert(1, str(Path(__file__).resolve().parents[1]))  # the repository (when not installed)

from extract.accel import autocast, bf16_native, cpu_flags  # noqa: E402
from models import get_model  # noqa: E402
from train.tasks import compute_losses  # noqa: E402
from train.tasks.qa_losses import open_ended_loss  # noqa: E402

VOCAB, ANSWERS = 5000, 1000
MODELS = ("mspan", "masn", "cmin", "siasamrea", "siasamrea-e2e")


# ============================================================================================ batches
def synthetic_batch(cfg, *, batch_size: int, vocab_size: int, num_answers: int, device: str) -> dict:
    """A random MSPAN batch following the batch contract (open-ended task)."""
    g = torch.Generator().manual_seed(0)
    lens = torch.randint(4, 15, (batch_size,), generator=g)
    question = torch.randint(2, vocab_size, (batch_size, 14), generator=g)
    question = question * (torch.arange(14) < lens[:, None])  # 0-padded after each length
    batch = {
        "appearance": torch.randn(batch_size, cfg.num_frames, cfg.appearance_dim, generator=g),
        "motion": torch.randn(batch_size, cfg.num_frames, cfg.motion_dim, generator=g),
        "question": question,
        "question_len": lens,
        "answer": torch.randint(0, num_answers, (batch_size,), generator=g),
    }
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}


def masn_batch(cfg, *, batch_size: int, objects: int, vocab_size: int, num_answers: int) -> dict:
    """A random ``masn``-layout batch (every frame and object real, questions of 4..14 words)."""
    g = torch.Generator().manual_seed(0)
    B, T, M = batch_size, cfg.num_frames, objects
    lens = torch.randint(4, 15, (B,), generator=g)
    return {
        "appearance": torch.randn(B, T, cfg.appearance_dim, generator=g),
        "motion": torch.randn(B, T, cfg.motion_dim, generator=g),
        "objects": torch.randn(B, T, M, cfg.appearance_dim, generator=g),
        "object_boxes": torch.rand(B, T, M, 6, generator=g),
        "motion_objects": torch.randn(B, T, M, cfg.motion_dim, generator=g),
        "frame_mask": torch.ones(B, T, dtype=torch.bool),
        "object_mask": torch.ones(B, T, M, dtype=torch.bool),
        "question": torch.randint(2, vocab_size, (B, 20), generator=g) * (torch.arange(20) < lens[:, None]),
        "question_len": lens,
        "answer": torch.randint(0, num_answers, (B,), generator=g),
    }


def siasamrea_batch(cfg, *, batch_size: int, num_frames: int, vocab_size: int, num_answers: int,
                    device: str) -> dict:
    """A random open-ended batch for SiaSamRea: ``frames`` (B, T, Da) at 4 fps with masks and times."""
    g = torch.Generator().manual_seed(0)
    lens = torch.randint(4, 15, (batch_size,), generator=g)
    question = torch.randint(2, vocab_size, (batch_size, 14), generator=g)
    question = question * (torch.arange(14) < lens[:, None])
    n = torch.randint(num_frames // 2, num_frames + 1, (batch_size,), generator=g)
    mask = torch.arange(num_frames)[None] < n[:, None]
    batch = {
        "frames": torch.randn(batch_size, num_frames, cfg.frames_dim, generator=g) * mask[..., None],
        "frames_mask": mask,
        "frame_times": torch.arange(num_frames).float().expand(batch_size, -1) / 4.0,
        "question": question,
        "question_len": lens,
        "answer": torch.randint(0, num_answers, (batch_size,), generator=g),
    }
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}


# ============================================================================================ contenders
@dataclasses.dataclass
class Contender:
    """One side of a comparison: a model and its training step (``step(precision)`` -> detached loss)."""

    label: str
    model: torch.nn.Module
    step: Callable[[str], torch.Tensor]

    @property
    def params(self) -> int:
        return sum(p.numel() for p in self.model.parameters() if p.requires_grad)


@dataclasses.dataclass
class Lineup:
    """What one model's rows compare: the setting in words, the batch size, ours first, then its peers."""

    setting: str
    batch_size: int
    contenders: list[Contender]


def ours(name: str, cfg, batch: dict, *, task: str, device: str, label: str = "ours", lr: float = 1e-4,
         weight_decay: float = 0.0, adamw: bool = False) -> Contender:
    """Our registered model's step: forward and the shared loss under the autocast, backward, Adam(W)."""
    torch.manual_seed(0)
    model = get_model(name).build(cfg, vocab_size=VOCAB, num_answers=0 if task == "moment" else ANSWERS,
                                  task_type=task).to(device).train()  # fmt: skip
    params = [p for p in model.parameters() if p.requires_grad]
    opt = (torch.optim.AdamW if adamw else torch.optim.Adam)(params, lr=lr, weight_decay=weight_decay)

    def step(precision: str) -> torch.Tensor:
        opt.zero_grad(set_to_none=True)
        with autocast(device, precision):
            loss = sum(compute_losses(task, model(batch), batch).values())
        loss.backward()
        opt.step()
        return loss.detach()

    return Contender(label, model, step)


@contextlib.contextmanager
def official_code(path: str | os.PathLike) -> Iterator[str]:
    """``path`` (as a string: the import system skips other entries) first on ``sys.path`` meanwhile; the
    modules imported from it are dropped afterwards, so the next official code may reuse their names."""
    root = str(Path(path).resolve())
    sys.path.insert(0, root)
    try:
        yield root
    finally:
        sys.path.remove(root)
        ours = [name for name, module in list(sys.modules.items())
                if any(str(p).startswith(root + os.sep) for p in _places(module))]  # fmt: skip
        for name in ours:  # found first: a namespace package's path is computed from its parent's
            del sys.modules[name]


def _places(module) -> list[str]:
    """A module's file, or its package's directories (a namespace package has no file)."""
    places = [getattr(module, "__file__", None) or ""]
    path = getattr(module, "__path__", None)
    if isinstance(path, list | tuple) or type(path).__name__ == "_NamespacePath":
        places += [str(p) for p in path]
    return places


@contextlib.contextmanager
def cuda_moves_are_noops(enabled: bool) -> Iterator[None]:
    """While official code built for CUDA runs on a CPU: ``Tensor.cuda()`` returns the tensor itself."""
    if not enabled:
        yield
        return
    original = torch.Tensor.cuda
    torch.Tensor.cuda = lambda self, *a, **k: self  # type: ignore[method-assign]
    try:
        yield
    finally:
        torch.Tensor.cuda = original  # type: ignore[method-assign]


def official_step(model: torch.nn.Module, loss_of: Callable[[], torch.Tensor], opt, device: str
                  ) -> Callable[[str], torch.Tensor]:
    """The step of an official model: ``loss_of()`` under the autocast, backward, ``opt.step()``."""
    cpu = not device.startswith("cuda")

    def step(precision: str) -> torch.Tensor:
        opt.zero_grad()
        with cuda_moves_are_noops(cpu), autocast(device, precision):
            loss = loss_of()
        loss.backward()
        opt.step()
        return loss.detach()

    return step


# --------------------------------------------------------------------------------------------- mspan
def mspan_config(args: argparse.Namespace):
    cfg = get_model("mspan").config_cls()
    return dataclasses.replace(cfg, share_iteration_weights=args.shared_weights, variant=args.variant)


def mspan_contenders(args: argparse.Namespace, device: str, official: str | None) -> Lineup:
    cfg = mspan_config(args)
    bs = args.batch_size or 64
    batch = synthetic_batch(cfg, batch_size=bs, vocab_size=VOCAB, num_answers=ANSWERS, device=device)
    weights = "shared" if args.shared_weights else "per-iteration"
    setting = (f"MSPAN ({args.variant}, {weights} weights) train step (fwd+bwd+Adam), N={cfg.num_frames} "
               f"K={cfg.num_scales} T={cfg.iterations} D={cfg.node_dim}, batch {bs}, open head {ANSWERS} "
               f"answers, vocab {VOCAB}")  # fmt: skip
    out = [ours("mspan", cfg, batch, task="open", device=device, weight_decay=5e-6)]
    if official:
        out.append(mspan_official(cfg, batch, device=device))
    return Lineup(setting, bs, out)


def mspan_official(cfg, b: dict, *, device: str) -> Contender:
    """The official ``VideoQANetwork`` (FrameQA head) at the sizes of ``cfg``; cross-entropy, Adam."""
    network = importlib.import_module("network")
    utils = importlib.import_module("utils")
    sizes = argparse.Namespace(num_scale=cfg.num_scales, num_frames=cfg.num_frames)
    gcn_adj, gat_adj = utils.make_adjacency(sizes)
    torch.manual_seed(0)
    with cuda_moves_are_noops(not device.startswith("cuda")):  # its SSP.MSPAN moves its adjacency to CUDA
        model = network.VideoQANetwork(
            app_pool5_dim=cfg.appearance_dim, motion_dim=cfg.motion_dim, num_frames=cfg.num_frames,
            word_dim=cfg.word_dim, vocab_size=VOCAB, module_dim=cfg.hidden_dim, question_type="frameqa",
            num_answers=ANSWERS, num_scale=cfg.num_scales, dropout=cfg.dropout, GCN_adj=gcn_adj,
            GAT_adj=gat_adj, K=cfg.iterations, T=cfg.gcn_layers,
        ).to(device).train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-4, weight_decay=5e-6)
    zeros = torch.zeros(len(b["answer"]), 5, device=device)
    qlen = b["question_len"].cpu()  # its pack_padded_sequence needs CPU lengths

    def loss_of() -> torch.Tensor:
        logits = model(b["appearance"], b["motion"], b["question"], qlen, zeros, zeros)
        return torch.nn.functional.cross_entropy(logits.float(), b["answer"])

    return Contender("official", model, official_step(model, loss_of, opt, device))


# --------------------------------------------------------------------------------------------- masn
def masn_contenders(args: argparse.Namespace, device: str, official: str | None) -> Lineup:
    cfg = get_model("masn").config_cls()
    bs = args.batch_size or 32
    batch = masn_batch(cfg, batch_size=bs, objects=args.objects, vocab_size=VOCAB, num_answers=ANSWERS)
    batch = {k: v.to(device) for k, v in batch.items()}
    setting = (f"MASN train step (fwd+bwd+Adam), T={cfg.num_frames} M={args.objects} 2048-d, "
               f"d={cfg.hidden_dim}, g={cfg.glimpses}, batch {bs}, open head {ANSWERS} answers, "
               f"vocab {VOCAB}")  # fmt: skip
    out = [ours("masn", cfg, batch, task="open", device=device)]
    if official:
        out.append(masn_official(cfg, batch, device=device))
    return Lineup(setting, bs, out)


def masn_official(cfg, b: dict, *, device: str) -> Contender:
    """The official ``model.masn.MASN`` (FrameQA) on the same batch; cross-entropy, Adam."""
    import numpy as np

    official = importlib.import_module("model.masn").MASN
    torch.manual_seed(0)
    glove = np.random.default_rng(0).standard_normal((VOCAB, cfg.word_dim)).astype("float32")
    model = official(VOCAB, 1, glove, cfg.appearance_dim, cfg.motion_dim, cfg.hidden_dim,
                     dropout_p=cfg.dropout, gcn_layers=2, answer_vocab_size=ANSWERS, q_max_len=20,
                     v_max_len=cfg.num_frames).to(device).train()  # fmt: skip
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    inputs = (b["appearance"], b["motion"], b["objects"], b["object_boxes"], b["motion_objects"],
              b["frame_mask"].sum(1), b["question"], b["question_len"], b["answer"], None)

    def loss_of() -> torch.Tensor:
        return open_ended_loss(model("FrameQA", *inputs)[0].float(), b["answer"])

    return Contender("official", model, official_step(model, loss_of, opt, device))


# --------------------------------------------------------------------------------------------- cmin
def cmin_contenders(args: argparse.Namespace, device: str, official: str | None) -> Lineup:
    import cmin_bench

    bs = args.batch_size or 64
    cfg, batch = cmin_bench.ours_inputs(bs, device)
    out = [ours("cmin", cfg, batch, task="moment", device=device, lr=8e-4, weight_decay=1e-7, adamw=True)]
    if official:
        out.append(cmin_bench.official_contender(bs, device))
    return Lineup(cmin_bench.setting(bs), bs, out)


# --------------------------------------------------------------------------------------------- siasamrea
def siasamrea_contenders(args: argparse.Namespace, device: str, official: str | None) -> Lineup:
    entry = get_model("siasamrea")
    cfg = entry.config_cls()
    bs = args.batch_size or 16
    batch = siasamrea_batch(cfg, batch_size=bs, num_frames=args.num_frames, vocab_size=VOCAB,
                            num_answers=ANSWERS, device=device)  # fmt: skip
    base = dataclasses.replace(cfg, num_siamese=0)
    setting = (f"SiaSamRea train step (fwd + loss incl. L_siamese + bwd + Adam), paper defaults "
               f"H={cfg.hidden_dim}, {cfg.num_layers} layers, Bf={cfg.clip_frames} frames/clip, "
               f"N={cfg.num_siamese}; {args.num_frames} feature frames/video, batch {bs}, open head "
               f"{ANSWERS} answers; no public code: the base network (N=0) beside it")  # fmt: skip
    return Lineup(setting, bs, [ours("siasamrea", cfg, batch, task="open", device=device),
                                ours("siasamrea", base, batch, task="open", device=device, label="base N=0")])


def siasamrea_e2e_contenders(args: argparse.Namespace, device: str, official: str | None) -> Lineup:
    import e2e_bench  # SiaSamRea end to end from raw frames: its decode rate and its step

    return e2e_bench.contenders(args, device, official)


@dataclasses.dataclass(frozen=True)
class Bench:
    """How one model is measured: its contenders, and where its official code is."""

    contenders: Callable[[argparse.Namespace, str, str | None], Lineup]
    repo: str | None  # the official code's GitHub name (None: no public code)
    marker: tuple[str, ...] = ()  # files that identify a clone of it


BENCHES = {
    "mspan": Bench(mspan_contenders, "gzcsudo/MSPAN-VideoQA", ("network.py", "SSP.py")),
    "masn": Bench(masn_contenders, "ahjeongseo/MASN-pytorch", ("model/masn.py",)),
    "cmin": Bench(cmin_contenders, "ikuinen/CMIN_moment_retrieval", ("models_/gcn_final.py", "modules_")),
    "siasamrea": Bench(siasamrea_contenders, None),
    "siasamrea-e2e": Bench(siasamrea_e2e_contenders, None),
}


def find_official(bench: Bench, dirs: list[str]) -> str | None:
    """The first of ``dirs`` that is a clone of the model's official code, or holds one (any name)."""
    if bench.repo is None:
        return None
    for d in map(Path, dirs):
        for candidate in (d, *sorted(p for p in d.iterdir() if p.is_dir())) if d.is_dir() else ():
            if all((candidate / m).exists() for m in bench.marker):
                return str(candidate.resolve())
    return None


# ============================================================================================ timing
def race(contenders: list[Contender], precisions: list[str], *, device: str, steps: int, warmup: int
         ) -> dict[tuple[str, str], dict]:
    """Warm every (contender, precision), then time ``steps`` rounds, each running them one after another.

    Returns:
        ``{(label, precision): {"step_s", "gflop"}}``: mean seconds per step, and the step's matmul GFLOP
        (counted on the first warm-up step of each pair).
    """
    runs = [(c, p) for c in contenders for p in precisions]
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    gflop = {}
    for c, p in runs:
        counter = FlopCounterMode(display=False)
        with counter:
            c.step(p)
        gflop[c.label, p] = counter.get_total_flops() / 1e9
        for _ in range(warmup - 1):
            c.step(p)
    elapsed = dict.fromkeys(gflop, 0.0)
    for _ in range(steps):
        for c, p in runs:
            sync()
            start = time.perf_counter()
            loss = c.step(p)
            sync()
            elapsed[c.label, p] += time.perf_counter() - start
            if not torch.isfinite(loss):
                raise RuntimeError(f"non-finite loss {float(loss)} in the {c.label} step ({p})")
    return {k: {"step_s": elapsed[k] / steps, "gflop": gflop[k]} for k in gflop}


def time_steps(step: Callable[[], torch.Tensor], model: torch.nn.Module, *, device: str, batch_size: int,
               steps: int, warmup: int) -> dict:
    """One step function alone (``benchmarks/gpu_suite.py``): samples/s, s/step, params, GFLOP/step."""
    contender = Contender("it", model, lambda _precision: step())
    r = race([contender], ["given"], device=device, steps=steps, warmup=warmup)["it", "given"]
    return {"samples_per_s": batch_size / r["step_s"], "step_s": r["step_s"], "params": contender.params,
            "step_gflop": r["gflop"]}


def matmul_gflops(device: str, dtype: torch.dtype = torch.float32, *, size: int = 2048, rows: int = 4096,
                  repeats: int = 5) -> float:
    """Dense matmul throughput of this device in ``dtype``: a yardstick for the step throughput."""
    a = torch.randn(rows, size, device=device).to(dtype)
    w = torch.randn(size, size, device=device).to(dtype)
    a @ w
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    sync()
    start = time.perf_counter()
    for _ in range(repeats):
        a @ w
    sync()
    return 2 * rows * size * size * repeats / (time.perf_counter() - start) / 1e9


def device_name(device: str, threads: int) -> str:
    if device.startswith("cuda"):
        return torch.cuda.get_device_name(torch.device(device))
    return f"CPU {cpu_model()}, {threads} threads"


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            names = (ln.split(":", 1)[1].strip() for ln in fh if ln.startswith("model name"))
            return next(names, "unknown CPU")
    except OSError:
        return platform.processor() or platform.machine()


def machine_line(device: str, threads: int) -> str:
    """What a figure depends on: the processor, its bf16 support, torch, threads, the load right now."""
    flags = sorted(f for f in cpu_flags() if f.startswith(("avx512_bf16", "amx")) or f in ("avx2", "avx512f"))
    where = torch.cuda.get_device_name(torch.device(device)) if device.startswith("cuda") else cpu_model()
    return (f"{dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC, {where} ({os.cpu_count()} CPUs; flags "
            f"{' '.join(flags) or 'none of avx2/avx512f/avx512_bf16/amx'}), native bf16: "
            f"{bf16_native(device)}, torch {torch.__version__}, {threads} threads, load average "
            f"{os.getloadavg()[0]:.1f}")


# ============================================================================================ main
def run_model(name: str, args: argparse.Namespace, device: str, precisions: list[str]) -> list[str]:
    """Measure one model's contenders; print its rows; return its summary lines."""
    bench = BENCHES[name]
    official = find_official(bench, args.official_dir)
    if bench.repo and args.official_dir and official is None:
        where = ", ".join(args.official_dir)
        print(f"({name}: no clone of {bench.repo} under {where}; timed alone)", flush=True)
    with official_code(official) if official else contextlib.nullcontext():
        lineup = bench.contenders(args, device, official)
        contenders = lineup.contenders
        results = race(contenders, precisions, device=device, steps=args.steps, warmup=args.warmup)
    rate = {k: lineup.batch_size / r["step_s"] for k, r in results.items()}
    today, native = dt.date.today().isoformat(), "native" if bf16_native(device) else "emulated"
    where = f"{device_name(device, args.threads)}, bf16 {native}"
    me, peers = contenders[0], contenders[1:]
    for p in precisions:
        r = results[me.label, p]
        cells = [f"ours {rate[me.label, p]:.2f} samples/s ({r['step_s']:.2f} s/step, {r['gflop']:.0f} "
                 f"GFLOP/step, {me.params / 1e6:.1f}M params)"]  # fmt: skip
        for peer in peers:
            cells.append(f"{peer.label} {rate[peer.label, p]:.2f} samples/s ({peer.params / 1e6:.1f}M "
                         f"params); ours / {peer.label} {rate[me.label, p] / rate[peer.label, p]:.2f}x")
        if not peers:
            cells.append("official code not run" if bench.repo else "no public code")
        print(f"| {today} | {where} | {name} | {lineup.setting}, {args.steps} alternating timed steps | "
              f"{p} | {'; '.join(cells)} |", flush=True)  # fmt: skip
    return summary(name, rate, precisions, [c.label for c in contenders])


def summary(name: str, rate: dict, precisions: list[str], labels: list[str]) -> list[str]:
    """Ratios of one model: each contender's bf16 / fp32; ours / each peer, in each precision and ours
    in bf16 against the peer as it ships (fp32)."""
    lines = []
    if {"fp32", "bf16"} <= set(precisions):
        lines += [f"{name} {lab}: bf16 / fp32 {rate[lab, 'bf16'] / rate[lab, 'fp32']:.2f}x" for lab in labels]
    for peer in labels[1:]:
        same = ", ".join(f"{p} {rate[labels[0], p] / rate[peer, p]:.2f}x" for p in precisions)
        line = f"{name} ours / {peer}: {same}"
        if {"fp32", "bf16"} <= set(precisions):
            line += f"; ours bf16 / {peer} fp32 {rate[labels[0], 'bf16'] / rate[peer, 'fp32']:.2f}x"
        lines.append(line)
    return lines


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", choices=["all", *MODELS], default="all", help="which model (default: all)")
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto",
                        help="auto (default): CPU, then CUDA when available")
    parser.add_argument("--threads", type=int, default=2, help="CPU intra-op threads")
    parser.add_argument("--precision", default="fp32,bf16", help="comma-separated autocasts (fp32, bf16)")
    parser.add_argument("--batch-size", type=int, default=None,
                        help="default: each model's (mspan 64, masn 32, cmin 64, siasamrea 16, "
                        "siasamrea-e2e 2)")
    parser.add_argument("--steps", type=int, default=2, help="timed steps per contender and precision")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps (>= 1; the first counts FLOPs)")
    parser.add_argument("--official-dir", action="append", default=[], metavar="DIR",
                        help="a clone of a model's official code, or a directory holding the clones "
                        "(repeatable)")
    parser.add_argument("--objects", type=int, default=10, help="masn: objects per frame")
    parser.add_argument("--num-frames", type=int, default=64,
                        help="siasamrea: feature frames per video (4 fps)")
    parser.add_argument("--shared-weights", action="store_true",
                        help="mspan: one weight set for all iterations (default: one per iteration, as "
                        "the official code)")
    parser.add_argument("--variant", choices=["paper", "official"], default="paper", help="mspan setting")
    args = parser.parse_args(argv)
    if args.warmup < 1 or args.steps < 1:
        parser.error("--warmup and --steps must be >= 1")
    precisions = [p.strip() for p in args.precision.split(",") if p.strip()]
    if not precisions or set(precisions) - {"fp32", "bf16"}:
        parser.error(f"--precision {args.precision!r}: choose from fp32, bf16")
    for d in args.official_dir:
        if not Path(d).is_dir():
            parser.error(f"--official-dir {d}: not a directory")
    devices = ["cpu", "cuda"] if args.device == "auto" else [args.device]
    if not torch.cuda.is_available() and "cuda" in devices:
        if args.device == "cuda":
            raise SystemExit("--device cuda: no CUDA device is available")
        devices.remove("cuda")
    names = list(MODELS) if args.model == "all" else [args.model]
    for device in devices:
        torch.set_num_threads(args.threads)
        yard = ", ".join(f"{d} {matmul_gflops(device, t):.0f}" for d, t in
                         (("fp32", torch.float32), ("bf16", torch.bfloat16)) if d in precisions)
        print(f"\n{machine_line(device, args.threads)}; plain 4096x2048x2048 matmul GFLOP/s: {yard}\n")
        print("| date | device | model | setting | autocast | samples/s |")
        print("|---|---|---|---|---|---|", flush=True)
        lines = []
        for name in names:
            lines += run_model(name, args, device, precisions)
        print(f"\nSummary ({device}, native bf16: {bf16_native(device)}, load average now "
              f"{os.getloadavg()[0]:.1f}):")
        for line in lines:
            print(f"- {line}", flush=True)


if __name__ == "__main__":
    main()
