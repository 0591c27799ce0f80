"""SiaSamRea end to end (``model.input=frames``, issue 27): its data path and its training step (by hand).

Two figures, each with random weights (speed does not depend on them) and generated videos:

- **frames decoded/s** of the training data path: ``train.frames.FrameQADataset.read_clips``, the code a
  DataLoader worker runs per question (open the video, the ``frame_fps`` grid, the anchor and N siamese
  clips drawn with a seed, decord decoding only their frames, resized by FFmpeg and centre-cropped), in
  this process on one thread, over 320x240 mp4s of 10 s at 25 fps; also as questions/s;
- **samples/s** of the training step: the end-to-end model (image backbone trunk, temporal mean pooling,
  a BERT-shaped text transformer built from its config, the cross-modal layers, siamese terms) on a
  batch of decoded clips: forward under the autocast, the shared loss, backward, Adam; gradient
  checkpointing of the backbone off and on (``model.grad_checkpoint``).

Sizes (:data:`SIZES`): ``cpu`` (``benchmarks/train_bench.py --model siasamrea-e2e``): ResNet-50 and a
BERT-base-shaped encoder (12 x 768) at a small input sized for 2 cores: 112 px, 2 frames a clip, N = 2
siamese clips, batch 2; ``gpu`` (``benchmarks/gpu_suite.py --only e2e``): the model's defaults
(``SiaSamReaConfig``: ResNet-50 at 224 px, 8 frames a clip, N = 8 siamese clips, the paper's N), 64 text
tokens, batch 8; ``dry``: ResNet-18 at 32 px and a tiny encoder (the suite's dry run). Open-ended head
with 1000 answers, as ``train_bench``.
"""

from __future__ import annotations

import dataclasses
import tempfile
import time
from pathlib import Path

import torch

ANSWERS, TEXT_VOCAB = 1000, 30522  # train_bench's answers; BERT-base's vocabulary


@dataclasses.dataclass(frozen=True)
class E2ESizes:
    """What the end-to-end figures run on."""

    name: str
    backbone: str
    frame_size: int
    clip_frames: int
    num_siamese: int
    batch: int
    text_layers: int = 12  # the text transformer's shape (BERT-base: 12 x 768, 12 heads)
    text_width: int = 768
    text_len: int = 64
    hidden_dim: int = 768  # the cross-modal layers (SiaSamReaConfig's default)
    videos: int = 4
    decode_items: int = 16

    def describe(self) -> str:
        text = "BERT-base-shaped" if (self.text_layers, self.text_width) == (12, 768) else "tiny"
        return (f"{self.backbone} at {self.frame_size} px, Bf={self.clip_frames} frames/clip, "
                f"N={self.num_siamese} siamese clips, {text} text encoder "
                f"({self.text_layers}x{self.text_width}, {self.text_len} tokens), batch {self.batch}")


SIZES = {
    "cpu": E2ESizes("cpu", "resnet50", 112, 2, 2, 2, text_len=32, decode_items=24),
    "gpu": E2ESizes("gpu", "resnet50", 224, 8, 8, 8),
    "dry": E2ESizes("dry", "resnet18", 32, 2, 1, 1, text_layers=1, text_width=16, text_len=8, hidden_dim=16,
                    videos=1, decode_items=2),
}


def config(s: E2ESizes, *, grad_checkpoint: bool, feature_dim: int):
    """The SiaSamRea config of the end-to-end model at sizes ``s`` (its other values the defaults)."""
    from models.siasamrea import SiaSamReaConfig

    small = {} if s.hidden_dim == 768 else {"num_heads": 2, "num_layers": 1, "affinity_dim": 8}
    return SiaSamReaConfig(input="frames", backbone=s.backbone, backbone_weights="random",
                           frame_size=s.frame_size, clip_frames=s.clip_frames, num_siamese=s.num_siamese,
                           siamese_shift=2, text_encoder="transformer", text_max_len=s.text_len,
                           text_encoder_path="(a random BERT built from its config)", frames_dim=feature_dim,
                           hidden_dim=s.hidden_dim, grad_checkpoint=grad_checkpoint, **small)


def build_model(s: E2ESizes, *, grad_checkpoint: bool, device: str) -> torch.nn.Module:
    """The end-to-end model with a random backbone and a random BERT-shaped text encoder, in train mode."""
    import transformers

    from extract.backbones import build_backbone
    from models.siasamrea import siasamrea

    torch.manual_seed(0)
    loaded = build_backbone(s.backbone, weights="random", device="cpu", precision="fp32")
    heads = 12 if s.text_width == 768 else 2
    bert = transformers.BertModel(transformers.BertConfig(
        vocab_size=TEXT_VOCAB, hidden_size=s.text_width, num_hidden_layers=s.text_layers,
        num_attention_heads=heads, intermediate_size=4 * s.text_width, max_position_embeddings=512))
    cfg = config(s, grad_checkpoint=grad_checkpoint, feature_dim=loaded.feature_dim)
    model = siasamrea(cfg, vocab_size=2, num_answers=ANSWERS, task_type="open", text_encoder=bert,
                      backbone=loaded.module, pixel_mean=loaded.preprocessing.mean,
                      pixel_std=loaded.preprocessing.std)
    return model.to(device).train()


def synthetic_batch(s: E2ESizes, device: str) -> dict:
    """A batch as ``train.frames.FrameCollate`` makes it: the clips (B, K, Bf, S, S, 3) uint8 and the
    question's BERT tokens (B, 1, Lt)."""
    g = torch.Generator().manual_seed(0)
    B, K, Bf, S, Lt = s.batch, 1 + s.num_siamese, s.clip_frames, s.frame_size, s.text_len
    lens = torch.randint(Lt // 2, Lt + 1, (B, 1), generator=g)
    batch = {
        "clips": torch.randint(0, 256, (B, K, Bf, S, S, 3), generator=g, dtype=torch.uint8),
        "clip_valid": torch.ones(B, K, Bf, dtype=torch.bool),
        "clip_index": torch.arange(K * Bf).view(1, K, Bf).expand(B, -1, -1).contiguous(),
        "text_ids": torch.randint(1000, TEXT_VOCAB, (B, 1, Lt), generator=g),
        "text_mask": (torch.arange(Lt) < lens[..., None]).long(),  # (B, 1, Lt)
        "text_type_ids": torch.zeros(B, 1, Lt, dtype=torch.long),
        "answer": torch.randint(0, ANSWERS, (B,), generator=g),
    }
    return {k: v.to(device) for k, v in batch.items()}


def train_step(model: torch.nn.Module, batch: dict, *, device: str):
    """``step(precision) -> loss``: forward and the shared loss under the autocast, backward, Adam."""
    from extract.accel import autocast
    from train.tasks import compute_losses

    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-5)

    def step(precision: str) -> torch.Tensor:
        opt.zero_grad(set_to_none=True)
        with autocast(device, precision):
            loss = sum(compute_losses("open", model(batch), batch).values())
        loss.backward()
        opt.step()
        return loss.detach()

    return step


def decode_rate(s: E2ESizes, workdir: Path) -> dict:
    """Frames decoded/s (and questions/s) of the training data path's ``read_clips`` over generated videos."""
    import extract_bench

    from train.frames import FrameQADataset, item_seed

    paths = extract_bench.make_videos(workdir / f"e2e-videos-{s.frame_size}", s.videos, frames=250,
                                      height=240, width=320)  # 10 s at 25 fps
    cfg = config(s, grad_checkpoint=False, feature_dim=2048)
    ds = FrameQADataset(None, {p.stem: p for p in paths}, cfg, train=True)  # read_clips reads no question
    ds.read_clips(paths[0].stem, None, 0)  # warm-up (FFmpeg filters, page cache)
    frames = 0
    start = time.perf_counter()
    for i in range(s.decode_items):
        seed = item_seed(0, 0, i)
        clips = ds.read_clips(paths[i % len(paths)].stem, None, seed)["clips"]  # (K, Bf, S, S, 3)
        frames += clips.shape[0] * clips.shape[1]
    seconds = time.perf_counter() - start
    return {"frames_per_s": frames / seconds, "items_per_s": s.decode_items / seconds,
            "frames_per_item": frames / s.decode_items}


# ------------------------------------------------------------------------------- train_bench's lineup
def contenders(args, device: str, official: str | None):
    """``benchmarks/train_bench.py --model siasamrea-e2e``: the step with gradient checkpointing off, then on;
    the data path's decode rate in the setting."""
    from train_bench import Contender, Lineup

    s = dataclasses.replace(SIZES["cpu"], batch=args.batch_size or SIZES["cpu"].batch)
    with tempfile.TemporaryDirectory(prefix="e2e-bench-") as tmp:
        d = decode_rate(s, Path(tmp))
    batch = synthetic_batch(s, device)
    out = []
    for gc in (False, True):
        model = build_model(s, grad_checkpoint=gc, device=device)
        out.append(Contender("ours" if not gc else "grad checkpointing", model,
                             train_step(model, batch, device=device)))
    setting = (f"SiaSamRea end to end train step (fwd + loss incl. L_siamese + bwd + Adam), {s.describe()}, "
               f"open head {ANSWERS} answers, random weights; data path (read_clips, 1 thread, 320x240 mp4): "
               f"{d['frames_per_s']:.0f} frames decoded/s = {d['items_per_s']:.1f} questions/s of "
               f"{d['frames_per_item']:.0f} frames; grad checkpointing off (ours) and on")
    return Lineup(setting, s.batch, out)
