"""The GPU benchmark suite: every speed figure docs/benchmarks.md wants from a CUDA machine, one command.

    python benchmarks/gpu_suite.py                # needs a CUDA device; sized for under 8 minutes
    python benchmarks/gpu_suite.py --dry-run      # CPU, tiny sizes: every step builds and runs once
    python benchmarks/gpu_suite.py --only train   # one step (appearance, motion, objects, train, data)

Each step runs in fp32 and in bf16 (``torch.autocast(device, dtype=torch.bfloat16)`` around the forward
passes, applied here so the suite does not depend on a toolkit option), random weights, on data made here:

- **appearance**: ResNet-152 at 224 px, frames/s end to end (decord decode of generated 320x240 mp4s at
  the backbone's input size, then preprocessing and the forward pass, one after the other in this
  process), with decode alone and the model alone beside it;
- **motion**: 3D ResNet-152 (Hara et al., 16 x 112 px clips), I3D ResNet-50 (8 x 224 px) and C3D fc7
  (16 x 112 px crops of 128x171 frames), clips/s;
- **objects**: Faster R-CNN (ResNet-50 FPN v2, 600 px shorter side) + the ResNet-152 conv5 map and
  RoIAlign of the 10 kept boxes, images/s (``benchmarks/objects_bench.py``; the detector itself runs in
  fp32 in both rows, as the toolkit runs it); and bottom-up attention's Visual Genome network
  (``bottomup_r101_vg``, 600 px, 300 proposals, 10 regions kept), images/s;
- **train**: a training step (forward, backward, Adam) of every model of ``models.MODELS`` at its
  paper's sizes on a synthetic batch (``benchmarks/train_bench.py`` / ``cmin_bench.py``), samples/s;
- **e2e**: SiaSamRea end to end from raw frames (``benchmarks/e2e_bench.py``, size ``gpu``): ResNet-50 at
  224 px, 8 frames a clip, N = 8 siamese clips, a BERT-base-shaped text encoder, batch 8, samples/s of the
  training step with the backbone's gradient checkpointing off and on (peak memory in the notes);
- **data**: the training data path beside it (``benchmarks/data_bench.py``): samples/s ``QADataset``
  delivers from an ``mspan`` feature directory of TGIF-QA size (40,000 videos, float16, 5 GiB, generated
  under ``--workdir`` and kept there) through the training run's DataLoader with one worker and with one
  per CPU, pinned and copied to the GPU, against the MSPAN bf16 training step of the same run.

It prints markdown rows (date, device, step, setting, fp32, bf16, bf16/fp32) for docs/benchmarks.md, and
the data path's rows in a second table.
Without a CUDA device it stops at once with one line and exit status 2, unless ``--dry-run``.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime as dt
import os
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import torch

# The toolkit and the other benchmarks (beside this file: sys.path[0] when run as a script) are imported
# where they are used, so that a machine without CUDA is told so at once.

PRECISIONS = ("fp32", "bf16")
STEPS = ("appearance", "motion", "objects", "train", "e2e", "data")
VOCAB, ANSWERS = 5000, 1000  # train_bench's sizes (cmin_bench's questions draw words below 5000)


@dataclasses.dataclass(frozen=True)
class Sizes:
    """What each step runs on: the real sizes, or :data:`DRY` (tiny, CPU)."""

    appearance: str = "resnet152"
    motion: tuple[str, ...] = ("r3d152_k700", "i3d_r50", "c3d_sports1m")
    detector: str = "fasterrcnn_resnet50_fpn_v2"
    bottomup: str = "bottomup_r101_vg"
    bottomup_side: int = 600
    bottomup_proposals: int = 300  # RPN.POST_NMS_TOPK_TEST of the released config (and the masn set)
    bottomup_batch: int = 4
    videos: int = 16
    video_frames: int = 64
    image_batch: int = 64
    image_size: int | None = None  # None: the backbone's own input size
    clip_batch: int = 16
    clip_len: int | None = None
    detector_side: int = 600
    detector_batch: int = 8
    repeats: int = 10
    warmup: int = 2
    train_batch: int | None = None  # None: each model's benchmark batch (MASN 32, the others 64)
    tiny_models: bool = False
    data: str = "real"  # data_bench's sizes: "real" (TGIF-QA size) or "dry"
    data_workers: int | None = None  # None: one per CPU
    e2e: str = "gpu"  # e2e_bench.SIZES key


#: the dry run: the same code on the small sibling architectures (the real ones are checked to exist) and
#: tiny inputs, so that it stays cheap on a CPU
DRY = Sizes(appearance="resnet18", motion=("r3d_18", "i3d_r50"),
            detector="fasterrcnn_mobilenet_v3_large_320_fpn", bottomup_side=48, bottomup_proposals=4,
            bottomup_batch=1, videos=1, video_frames=2, image_batch=2,
            image_size=32, clip_batch=1, clip_len=2, detector_side=64, detector_batch=1, repeats=1, warmup=1,
            train_batch=2, tiny_models=True, data="dry", data_workers=1, e2e="dry")  # fmt: skip

#: dry-run model sizes (as the models' unit tests use)
TINY = {
    "mspan": dict(num_frames=8, appearance_dim=12, motion_dim=10, node_dim=32, hidden_dim=16, word_dim=8,
                  lstm_layers=1, num_scales=4, iterations=2),
    "masn": dict(num_frames=5, appearance_dim=12, motion_dim=10, hidden_dim=16, word_dim=8, position_dim=4,
                 glimpses=2, ban_rank=2),
    "siasamrea": dict(frames_dim=12, hidden_dim=16, num_heads=2, num_layers=1, word_dim=8, clip_frames=4,
                      frame_interval=2, siamese_shift=2, num_siamese=3, affinity_dim=8),
    "cmin": dict(video_dim=12, d_model=16, word_dim=8, num_heads=2, num_dep_labels=5, window_widths=(2, 4)),
}  # fmt: skip
#: the paper sizes cmin_bench uses (500-d C3D clip features, PCA to 500)
PAPER = {"cmin": dict(video_dim=500)}


# ============================================================================================ precision
@contextlib.contextmanager
def backbone_precision(precision: str) -> Iterator[None]:
    """The extraction backbones' autocast (bf16 on CUDA only, in the toolkit) set to ``precision``."""
    from extract.accel import Accelerator

    original = Accelerator.autocast
    bf16 = precision == "bf16"
    Accelerator.autocast = lambda self: torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=bf16)
    try:
        yield
    finally:
        Accelerator.autocast = original


def timed(fn: Callable[[], object], *, device: str, repeats: int, warmup: int) -> float:
    """Seconds per call of ``fn`` after ``warmup`` untimed calls (CUDA work included)."""
    for _ in range(warmup):
        fn()
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    sync()
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    sync()
    return (time.perf_counter() - start) / repeats


# ============================================================================================ steps
def appearance(device: str, sizes: Sizes, videos: list[Path]) -> Iterator[tuple[str, str, dict]]:
    """Image backbone frames/s: decode + model end to end, decode alone, model alone (pre-decoded)."""
    from extract.backbones import build_backbone
    from extract.video import Video

    net = build_backbone(sizes.appearance, weights="random", device=device)
    side = sizes.image_size or net.preprocessing.input_size

    def decode() -> list[np.ndarray]:
        out = []
        for path in videos:
            with Video(path, size=side) as video:
                out.append(video.read(np.arange(video.info.num_frames)))
        return out

    def model(stacks: list[np.ndarray]) -> None:
        for frames in stacks:
            net.features(frames, size=side, batch_size=sizes.image_batch)

    decoded = decode()
    frames = sum(len(x) for x in decoded)
    setting = f"{net.spec.description.split(',')[0]} @{side}, {len(videos)} mp4s x {frames // len(videos)} " \
              f"frames (320x240), batch {sizes.image_batch}"  # fmt: skip
    kw = dict(device=device, repeats=max(1, sizes.repeats // 5), warmup=1)
    for precision in PRECISIONS:
        with backbone_precision(precision):
            e2e = timed(lambda: model(decode()), **kw)
            alone = timed(lambda: model(decoded), **kw)
        decode_s = timed(decode, **kw)
        note = f"decode alone {frames / decode_s:.0f}, model alone {frames / alone:.0f} frames/s"
        yield precision, setting, {"value": frames / e2e, "unit": "frames/s end to end", "note": note}


def motion(name: str, device: str, sizes: Sizes) -> Iterator[tuple[str, str, dict]]:
    """Clips/s of a 3D backbone on random uint8 clips at its input size (preprocessing included)."""
    from extract.backbones import build_backbone

    net = build_backbone(name, weights="random", device=device)
    side = sizes.image_size or net.preprocessing.input_size
    length = sizes.clip_len or net.preprocessing.clip_len
    rng = np.random.default_rng(0)
    clips = rng.integers(0, 256, (sizes.clip_batch, length, side, side * 4 // 3, 3), dtype=np.uint8)
    title = net.spec.description.split(",")[0]
    setting = f"{name} ({title}), {length} x {side} px clips, batch {sizes.clip_batch}"
    for precision in PRECISIONS:
        with backbone_precision(precision):
            seconds = timed(lambda: net.features(clips, size=side, batch_size=sizes.clip_batch),
                            device=device, repeats=sizes.repeats, warmup=sizes.warmup)  # fmt: skip
        yield precision, setting, {"value": sizes.clip_batch / seconds, "unit": "clips/s"}


def objects(device: str, sizes: Sizes) -> Iterator[tuple[str, str, dict]]:
    """Faster R-CNN + conv5 + RoIAlign images/s (objects_bench); the detector itself stays fp32."""
    import objects_bench

    setting = f"{sizes.detector} @{sizes.detector_side} px + {sizes.appearance} conv5 @224 + RoIAlign, " \
              f"batch {sizes.detector_batch}"  # fmt: skip
    for precision in PRECISIONS:
        with backbone_precision(precision):
            out = objects_bench.bench(sizes.detector, sizes.detector_side, batch=sizes.detector_batch,
                                      repeats=sizes.repeats, device=device, weights="random",
                                      appearance=sizes.appearance)  # fmt: skip
        note = f"detector alone {out['detect images/s']:.1f} images/s"
        yield precision, setting, {"value": out["detect+roi images/s"], "unit": "images/s", "note": note}


def bottomup_objects(device: str, sizes: Sizes) -> Iterator[tuple[str, str, dict]]:
    """bottom-up attention's network, its regions and their features: images/s of ``detect`` (fp32)."""
    import objects_bench

    setting = f"{sizes.bottomup} @{sizes.bottomup_side} px, {sizes.bottomup_proposals} proposals, " \
              f"10 regions kept, batch {sizes.bottomup_batch}"  # fmt: skip
    for precision in PRECISIONS:
        with backbone_precision(precision):
            out = objects_bench.bench(sizes.bottomup, sizes.bottomup_side, batch=sizes.bottomup_batch,
                                      repeats=max(1, sizes.repeats // 5), device=device, weights="random",
                                      appearance=sizes.appearance,
                                      num_proposals=sizes.bottomup_proposals)  # fmt: skip
        yield precision, setting, {"value": out["detect images/s"], "unit": "images/s"}


def train_batch(name: str, cfg, batch_size: int, device: str) -> dict:
    """A synthetic batch of the model's layout (the batch functions of train_bench / cmin_bench)."""
    import cmin_bench
    import train_bench

    if name == "mspan":
        batch = train_bench.synthetic_batch(cfg, batch_size=batch_size, vocab_size=VOCAB, num_answers=ANSWERS,
                                            device=device)  # fmt: skip
    elif name == "masn":
        batch = train_bench.masn_batch(cfg, batch_size=batch_size, objects=10, vocab_size=VOCAB,
                                       num_answers=ANSWERS)  # fmt: skip
    elif name == "siasamrea":
        batch = train_bench.siasamrea_batch(cfg, batch_size=batch_size, num_frames=64, vocab_size=VOCAB,
                                            num_answers=ANSWERS, device=device)  # fmt: skip
    elif name == "cmin":
        batch = cmin_bench._ours_batch(batch_size, cfg, torch.Generator().manual_seed(0))
    else:
        raise SystemExit(f"gpu_suite: no synthetic batch for model {name!r}; add one to train_batch()")
    return {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}


def train_rate(entry, cfg, task: str, batch: dict, *, device: str, sizes: Sizes, precision: str) -> dict:
    """``train_bench.time_steps`` of a fresh model: forward under ``precision``, backward, Adam."""
    import train_bench

    from train.tasks import compute_losses

    batch_size = len(batch["question"])
    torch.manual_seed(0)
    model = entry.build(cfg, vocab_size=VOCAB, num_answers=0 if task == "moment" else ANSWERS,
                        task_type=task).to(device).train()  # fmt: skip
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    bf16 = precision == "bf16"

    def step() -> torch.Tensor:
        opt.zero_grad(set_to_none=True)
        with torch.autocast(torch.device(device).type, dtype=torch.bfloat16, enabled=bf16):
            losses = compute_losses(task, model(batch), batch)
        loss = sum(losses.values())
        loss.backward()
        opt.step()
        return loss.detach()

    return train_bench.time_steps(step, model, device=device, batch_size=batch_size, steps=sizes.repeats,
                                  warmup=sizes.warmup)  # fmt: skip


def train(name: str, device: str, sizes: Sizes) -> Iterator[tuple[str, str, dict]]:
    """Samples/s of one training step of a registered model at its paper's sizes, fp32 and bf16."""
    from models import get_model

    entry = get_model(name)
    cfg = entry.config_cls(**(TINY[name] if sizes.tiny_models else PAPER.get(name, {})))
    task = "moment" if "moment" in entry.task_types else "open"
    batch_size = sizes.train_batch or (32 if name == "masn" else 64)
    batch = train_batch(name, cfg, batch_size, device)
    for precision in PRECISIONS:
        r = train_rate(entry, cfg, task, batch, device=device, sizes=sizes, precision=precision)
        config = "tiny config" if sizes.tiny_models else "paper config"
        setting = f"{name} train step, {config}, batch {batch_size}, {r['params'] / 1e6:.1f}M params"
        yield precision, setting, {"value": r["samples_per_s"], "unit": "samples/s"}


def e2e(device: str, sizes: Sizes, grad_checkpoint: bool) -> Iterator[tuple[str, str, dict]]:
    """Samples/s of SiaSamRea's end-to-end training step (e2e_bench), fp32 and bf16, with its peak memory."""
    import e2e_bench
    import train_bench

    s = e2e_bench.SIZES[sizes.e2e]
    batch = e2e_bench.synthetic_batch(s, device)
    for precision in PRECISIONS:
        model = e2e_bench.build_model(s, grad_checkpoint=grad_checkpoint, device=device)
        step = e2e_bench.train_step(model, batch, device=device)
        cuda = device.startswith("cuda")
        if cuda:
            torch.cuda.reset_peak_memory_stats(device)
        r = train_bench.time_steps(lambda step=step, p=precision: step(p), model, device=device,
                                   batch_size=s.batch, steps=sizes.repeats, warmup=sizes.warmup)
        note = f"peak {torch.cuda.max_memory_allocated(device) / 2**30:.1f} GiB" if cuda else ""
        del model, step
        setting = (f"siasamrea end to end train step, {s.describe()}, grad checkpointing "
                   f"{'on' if grad_checkpoint else 'off'}, {r['params'] / 1e6:.1f}M params")
        yield precision, setting, {"value": r["samples_per_s"], "unit": "samples/s", "note": note}


def data_path(device: str, sizes: Sizes, workdir: Path, step_rate: float | None) -> Iterator[str]:
    """Rows of the data path: QADataset from TGIF-QA-sized shards through the training loader, 1 worker and
    one per CPU, pinned and copied to ``device``; beside the MSPAN bf16 step of this run (``step_rate``)."""
    import data_bench

    dsizes = data_bench.DRY if sizes.data == "dry" else dataclasses.replace(data_bench.Sizes(), batches=100)
    out = data_bench.make_qa_features(workdir / "data-qa", dsizes)
    ds, collate = data_bench.qa_dataset(out, dsizes, standardize=True)
    setting = (f"QADataset + QACollate, mspan {dsizes.qa_videos:,} videos x 2 x ({dsizes.frames}, "
               f"{dsizes.dims[0]}) float16 shards, standardised, batch {dsizes.batch}, pinned + copied to "
               "the device")  # fmt: skip
    for workers in sorted({1, sizes.data_workers or os.cpu_count() or 1}):
        r = data_bench.loader_rate(ds, collate, workers=workers, sizes=dsizes, seed=workers, device=device)
        rate = r["samples_per_s"]
        versus = f"{step_rate:.1f} | {rate / step_rate:.1f}x" if step_rate else "not measured | –"
        yield f"{setting} | {workers} | {_figure(rate)} | {_figure(rate / workers)} | {versus}"


# ============================================================================================ main
def jobs(device: str, sizes: Sizes, videos: list[Path], only: set[str]) -> Iterator[tuple[str, Iterator]]:
    """(step, iterator of (precision, setting, result)) for every measurement of the selected steps."""
    from models import MODELS

    if "appearance" in only:
        yield "appearance", appearance(device, sizes, videos)
    if "motion" in only:
        for name in sizes.motion:
            yield "motion", motion(name, device, sizes)
    if "objects" in only:
        yield "objects", objects(device, sizes)
        yield "objects", bottomup_objects(device, sizes)
    if "train" in only:
        for name in MODELS:
            yield "train", train(name, device, sizes)
    if "e2e" in only:
        for grad_checkpoint in (False, True):
            yield "e2e", e2e(device, sizes, grad_checkpoint)


def check_names() -> None:
    """The real run's backbones and detector exist (the dry run builds their small siblings)."""
    from extract.backbones import BACKBONES
    from extract.objects import DETECTORS

    real = Sizes()
    missing = [n for n in (real.appearance, *real.motion) if n not in BACKBONES]
    missing += [d for d in (real.detector, real.bottomup) if d not in DETECTORS]
    if missing:
        raise SystemExit(f"gpu_suite: unknown backbone or detector {missing}; update Sizes")


def _figure(value: float) -> str:
    return f"{value:.1f}" if value >= 1 else f"{value:.3f}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--dry-run", action="store_true", help="CPU, tiny sizes, one iteration per step")
    parser.add_argument("--device", default="cuda", help="CUDA device (default: cuda)")
    parser.add_argument("--only", nargs="+", choices=STEPS, default=list(STEPS), help="steps to run")
    parser.add_argument("--workdir", type=Path, default=None,
                        help="where the generated videos and the data step's feature directory go (kept)")
    args = parser.parse_args(argv)
    if args.dry_run:
        device, sizes = "cpu", DRY
        torch.set_num_threads(1)
    elif not torch.cuda.is_available():
        print("gpu_suite: no CUDA device is available (--dry-run checks the suite on CPU)", file=sys.stderr)
        return 2
    else:
        device, sizes = args.device, Sizes()
    import extract_bench
    import train_bench

    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="gpu-suite-"))
    videos = []
    if "appearance" in args.only:
        videos = extract_bench.make_videos(workdir / "videos", sizes.videos, frames=sizes.video_frames,
                                           height=240, width=320)  # fmt: skip
    name = train_bench.device_name(device, torch.get_num_threads())
    today = dt.date.today().isoformat()
    start = time.perf_counter()
    backends = torch.backends
    tf32 = f"TF32: cuDNN convolutions {backends.cudnn.allow_tf32}, matmuls {backends.cuda.matmul.allow_tf32}"
    dry = " (DRY RUN: tiny sizes on CPU, figures meaningless)" if args.dry_run else ""
    print(f"\nGPU suite{dry}: {name}, torch {torch.__version__}, {today}; fp32 = torch's defaults ({tf32})\n")
    print("| date | device | step | setting | fp32 | bf16 | bf16 / fp32 |")
    print("|---|---|---|---|---|---|---|", flush=True)
    if args.dry_run:
        check_names()
    step_rate = None  # the MSPAN bf16 training step, for the data path's table
    for step, measurements in jobs(device, sizes, videos, set(args.only)):
        rows = {precision: (setting, result) for precision, setting, result in measurements}
        setting = rows["fp32"][0]
        results = {precision: result for precision, (_, result) in rows.items()}
        fp32, bf16 = results["fp32"], results["bf16"]
        notes = "; ".join(f"{p}: {results[p]['note']}" for p in PRECISIONS if results[p].get("note"))
        print(f"| {today} | {name} | {step} | {setting}{f' ({notes})' if notes else ''} | "
              f"{_figure(fp32['value'])} {fp32['unit']} | {_figure(bf16['value'])} {bf16['unit']} | "
              f"{bf16['value'] / fp32['value']:.2f}x |", flush=True)  # fmt: skip
        if setting.startswith("mspan train step"):
            step_rate = bf16["value"]
        if device.startswith("cuda"):
            torch.cuda.empty_cache()
    if "data" in args.only:
        print("\n| date | device | data path | workers | samples/s | per worker | MSPAN bf16 step samples/s "
              "| data / step |")  # fmt: skip
        print("|---|---|---|---|---|---|---|---|", flush=True)
        for row in data_path(device, sizes, workdir, step_rate):
            print(f"| {today} | {name} | {row} |", flush=True)
    print(f"\nwall time {time.perf_counter() - start:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
