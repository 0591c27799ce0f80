"""SiaSamRea: siamese sampling and reasoning for video question answering, over frame features.

Yu et al., "Learning from Inside: Self-driven Siamese Sampling and Reasoning for Video Question
Answering", NeurIPS 2021. There is no public code; this file follows the paper's text.

**This is the toolkit's feature-based form of the paper's end-to-end model.** The paper fine-tunes a
ClipBERT-style network (ResNet-50 on raw frames + a 12-layer BERT, ClipBERT's pre-training) end to end.
Here the frames are the precomputed per-frame features of the ``siasamrea`` feature set (``frames``
(T, Da) at 4 fps by default, ``frame_times`` (T,) seconds; ``extract/featuresets.py``), the question
side is the GloVe + BiLSTM encoder the other models share (``models/layers.py``), and the cross-modal
transformer is small and trained from scratch. Siamese sampling picks clips *out of the extracted
frame features* at training time, so one extraction serves every epoch's random clips.

What this file computes (K = N + 1 clips: the anchor, index 0, and N siamese clips; Bf frames a clip;
H model width; A answers)::

    base network, per clip k:   x = [CLS; text tokens; W_v f_{k,1} + pos_1; ...; W_v f_{k,Bf} + pos_Bf]
                                 h_k = Transformer(x)[CLS]              multimodal clip feature (H,)
                                 p_k = softmax(head(h_k))               its prediction (A,)
    siamese sampling (training): anchor start s ~ U{lo .. hi - span}; siamese starts s + d_k,
                                 d_k in [-shift, shift] \\ {0}, the same frame interval; [lo, hi) = the
                                 video, or the question's segment when the dataset gives one (How2QA).
    Eq. (1)  SKG   A(i, j) = sigma(F(h_i))^T sigma(F(h_j))        sigma = L2 normalisation, F a projection
    Eq. (2)        A <- A * (1 - I);  A^(i, j) = softmax_j A(i, j)   (the row softmax runs over j != i)
    Eq. (3)  SKR   p^_i = sum_{j != i} A^(i, j) p_j                   propagated predictions, P^ = A^ P
    Eq. (4)        W A^ P, W in R^{1 x K} learnable                  fusion over the clips
    Eq. (5)        Q = omega W1 A^ P + (1 - omega) W2 P,  Q <- Q / sum(Q)   the soft label
    Eq. (8)  loss  L = alpha * L_siamese + L_gt,  L_siamese = - sum_a Q_a log p_anchor,a,
                   L_gt = the task loss, averaged over the K sampled clips (``gt_clips="all"``, below)
    (ours)         L_knowledge = - log Q_answer       trains F, W1, W2 (``knowledge_loss="gt"``, below)
    inference      the mean of the M = ``eval_clips`` clips' logits / scores / counts (M = 1: one clip)

Reading of the paper (what it leaves open, and what we chose):

- Clips and frames: B frames per clip at a fixed interval; the paper does not give B, the interval or
  how far the siamese starts may be from the anchor. Defaults here (ours): ``clip_frames`` 8 feature
  frames, ``frame_interval`` 2 (0.5 s at 4 fps), siamese starts within ``siamese_shift`` 4 frames of
  the anchor's. A video (or segment) shorter than a clip first shrinks the interval so the clip fits,
  and when it has fewer than Bf frames the clip repeats its last frame and masks the repeats out.
- Evaluation (``eval()``: validation, test, ``vqa-answer``) runs the base network alone (``num_siamese``
  has no effect there), as the paper's "no extra inference cost" says, on ``eval_clips`` = M clips: one
  centred clip for M = 1, else M clips whose starts are evenly spaced from the first to the last
  possible start over the video (or the question's segment), their logits / scores / counts averaged
  (the mean-pooling consensus of ClipBERT, on which the paper builds, which also scores several clips at
  test time). The paper does not give a number of test clips and says its siamese sampling adds no
  inference cost; the default M = 1 follows that, and M > 1 did not help on the demo layouts
  (docs/benchmarks.md, "SiaSamRea demo figures"). M is an inference setting: ``--eval-only
  --set model.eval_clips=M`` evaluates a checkpoint with another M (recorded in ``eval_config.yaml``).
- Eq. (4)-(5): W1 and W2 are kept on the simplex (softmax of learnable logits, initialised uniform) so
  that Q is a distribution; Eq. (5)'s normalisation is then applied as written. W spans the anchor and
  the N siamese clips (the anchor's propagated prediction p^_0 is what its siblings say about it).
- What trains the knowledge (``knowledge_loss``). The paper calls Q the *refined* soft label that
  SKG (Eq. 1-2) and SKR (Eq. 3-5) produce from what the clips predict, and Eq. (8) distils it into the
  anchor through L_siamese; it gives F, W1 and W2 no other objective. Taken literally
  (``knowledge_loss="siamese"``, the toolkit's first reading) they are trained by L_siamese against
  detached predictions, and its gradient always favours the anchor's own prediction (Q = p_anchor
  minimises the cross-entropy): W2 moves its weight to the anchor and W1 to the rows that contain it
  (on exchangeable clips W2_0 reached 0.50 and the anchor's share of Q 0.31, uniform 0.20; issue 23),
  so the "siamese knowledge" becomes a copy of the student. The default ``"gt"`` (ours) reads Q as a
  teacher that must be right to be a refinement: Q is a fixed target of L_siamese (no gradient from
  it into F, W1, W2) and F, W1, W2 learn from the ground-truth loss of Eq. (8) applied to Q,
  ``L_knowledge`` = -log Q_answer (count: squared error), as online distillation trains its ensemble
  teacher. With ``detach_predictions`` (default, ours: the paper does not say) the predictions P inside
  Q carry no gradient, so L_knowledge reaches only F, W1, W2 and, through F, the clip features h_k;
  L_gt trains the base network on the anchor, L_siamese pulls the anchor towards Q.
- Multiple choice: each candidate is read together with the question ([question; candidate] tokens),
  giving one score per candidate; p_k is the softmax over the candidates, and the clip feature h_k used
  by SKG is the mean of the candidates' CLS vectors (ours).
- Count (TGIF-QA), which the paper does not discuss: p_k is the regressed count (a scalar); Eq. (3)-(5)
  propagate and fuse the counts with the same A^ and W (already convex combinations, so no
  normalisation), and L_siamese is the squared error between the anchor's count and that soft count.
- L_gt is the trainer's loss for the task type (``train/tasks/qa_losses.py``: cross-entropy, summed pairwise
  hinge, MSE). Which clips it trains (``gt_clips``): the paper presents its base paradigm as fine-tuning
  each sampled clip-text pair with the ground truth, and its siamese clips are sampled clip-text pairs
  of the same question; default ``"all"`` (ours) supervises the anchor and the N siamese clips alike,
  the model returning every clip's output as ``clip_logits`` / ``clip_scores`` / ``clip_count`` (B, K,
  ...) and the trainer averaging the K losses (so alpha keeps its meaning against one clip's loss);
  ``"anchor"`` (the toolkit's first reading) supervises the anchor alone, the siamese clips then learning
  only through the shared weights. On the demo layouts N = 8 beat N = 0 with neither
  (docs/benchmarks.md, "SiaSamRea demo figures", which says why). The model adds ``alpha * L_siamese`` under
  ``outputs["aux_losses"]["loss_siamese"]`` and L_knowledge under ``"loss_knowledge"`` (training only,
  read from the batch's ``answer``), which the shared loss function sums in.
- Token embeddings: the type embedding (text / frame) starts at N(0, 0.02) (BERT's initialiser). With
  PyTorch's default N(0, 1) it was ~8x the BiLSTM's outputs (rms 0.12 at H = 768), so after the
  pre-norm every text token looked the same (cosine 0.99 between two different words) and the
  candidates could not be told apart: multiple choice sat at chance with its loss flat (issue 23; the
  hinge's 4 + L_siamese's log 5 = 5.6). The frame position embedding keeps N(0, 1), the scale of the
  normalised frame features, so that the clip's frame order stays visible (Action, Transition).
- Subtitles (``use_subtitles``): How2QA's input includes the video's subtitles (HERO / VALUE task
  definition, read by ``pipelines/datasets/how2qa.py``), and the paper's How2QA input has them. The
  text of the subtitle lines overlapping the question's segment is encoded by the question encoder and
  appended to the text tokens, ``[question; candidate; subtitle]`` (GloVe: a third BiLSTM pass, first
  ``subtitle_max_len`` tokens; transformer: ``[CLS] q [SEP] a [SEP] subtitle [SEP]``, see
  ``train/text_encoder.py``). Which lines and how many tokens the paper reads is not given (ours).
  Datasets without subtitles are read as before.
- Transformer: pre-norm blocks of width ``hidden_dim`` (the paper's is BERT-base, 12 layers x 768);
  the defaults below keep BERT-base's width and heads with 2 layers (ours) since nothing is pre-trained.
- Question encoder: ``text_encoder="glove"`` (default) is the GloVe + BiLSTM encoder the other models
  share. ``text_encoder="transformer"`` reads the question (multiple choice: each question + candidate
  pair, ``[CLS] q [SEP] a [SEP]``) with a pre-trained transformer from a local Hugging Face checkpoint
  directory (``text_encoder_path``; loaded by ``train/text_encoder.py``, never downloaded, the
  optional ``text`` extra), whose last hidden states are projected to ``hidden_dim`` and feed the same
  cross-modal transformer as the GloVe tokens. It is fine-tuned by default, as the paper's
  ClipBERT-style network fine-tunes BERT end to end; ``freeze_text_encoder=True`` keeps it fixed (and
  in eval mode). This file takes the loaded module (any ``nn.Module`` called as
  ``module(input_ids=, attention_mask=, token_type_ids=)`` returning ``last_hidden_state``) from its
  builder and imports nothing beyond torch; the batch then carries ``text_ids``, ``text_mask`` and
  ``text_type_ids`` (B, C', Lt) made by that checkpoint's tokenizer (C' = C candidates or 1).

End-to-end form (``model.input=frames``, issue 27): the paper's own setting, raw frames through an image
backbone fine-tuned together with the text transformer and the cross-modal layers. Nothing above changes
except where the clip's visual tokens come from:

- **How a run is started.** ``vqa-train siasamrea --dataset how2qa --root DATA --out RUN --set
  model.input=frames --set model.text_encoder=transformer --set model.text_encoder_path=BERT_DIR``
  (``--features`` is not read in this mode). Keys: ``model.input`` (``features`` | ``frames``),
  ``model.backbone`` (an image backbone of ``extract/backbones.py``: ``resnet50`` default, ``resnet18``,
  ``resnet101``, ``resnet152``), ``model.backbone_weights`` (``pretrained``: the local weight file as
  extraction finds it, sha256 recorded; ``random``: a fixed-seed initialisation for tests, with the loud
  random-weights warning), ``model.backbone_checkpoint`` (a local weight file instead of the torch cache),
  ``model.frame_size`` (input side S, 224), ``model.frame_fps`` (the rate of the frame grid the clips
  are drawn from, 4.0, as the ``siasamrea`` feature set), ``model.grad_checkpoint`` (recompute the
  backbone's stages in the backward pass), ``model.freeze_bn`` (BatchNorm in eval mode, its parameters
  not trained; default true, for pretrained weights, whose running statistics mean something; with
  ``backbone_weights=random`` they are 0 and 1, normalise nothing, and the deep random features of every
  clip look alike: on the demo's ActivityNet-QA layout a random ResNet-18 then stayed at chance, test
  accuracy 0.0, loss at log 6, while ``freeze_bn=false`` reached 0.33 in the same 25 epochs).
  ``clip_frames``, ``frame_interval``, ``siamese_shift``, ``num_siamese`` and
  ``eval_clips`` keep their meaning, counted in rows of the ``frame_fps`` grid. ``train.amp`` (bf16 on
  native-bf16 CPUs and GPUs) and ``train.grad_accum`` apply as for every model.
- **Data** (``train/frames.py``): DataLoader workers decode with decord only the frames of the sampled
  clips (never a whole video), resized by FFmpeg and centre-cropped to S x S; the batch carries ``clips``
  (B, K, Bf, S, S, 3) uint8, ``clip_valid`` (B, K, Bf) bool and ``clip_index`` (B, K, Bf) int64 (the
  source frames). Training K = 1 + N clips drawn with a generator seeded by (``train.seed``, epoch, item),
  so a resumed run draws the same clips; evaluation K = ``eval_clips`` deterministic clips. A video that
  does not decode is skipped and counted (``dropped_questions``, ``train.log``), never fed as zeros.
- **Clip feature** (this file): each frame through the backbone's convolutional trunk (the images
  normalised with its mean and std), its last map (D, h, w) averaged over the clip's valid frames
  (ClipBERT's temporal mean pooling, the end-to-end recipe the paper builds on; the paper gives no
  other), the h x w cells projected to H with a learnt row and column position embedding: the clip's
  visual tokens, which replace the Bf frame tokens of the feature form. The frame attention of an
  explanation is then uniform over a clip's valid frames (the mean pooling weighs them equally); the
  [CLS] attention over the cells is ``grid_attention`` (B, M, h*w).

Ablations (config switches): ``num_siamese=0`` (the base network alone), ``knowledge="uniform"`` (SKR
without SKG: A^(i, j) = 1 / (K - 1) for j != i), ``knowledge="skg"`` (SKG + SKR, default), and N.

Shared work: the question (and the candidates) are encoded once per question and broadcast to the K
clips; only the cross-modal transformer runs per clip.

Outputs (``forward(batch)``): ``logits`` (B, A) | ``scores`` (B, C) | ``count`` (B,) of the anchor clip
(training) or the M evaluation clips' mean (evaluation), and for explanations ``frame_attention``
(B, M*Bf) (mc: (B, C, M*Bf)) = the [CLS] token's last-layer attention on each clip's frame tokens
(heads averaged, renormalised over the clip's valid frames, each clip weighted 1 / M; training: the
anchor's, M = 1), ``frame_index`` (B, M*Bf) int64 = those frames' rows in the video's ``frames``
(``frame_times`` gives their seconds) and ``frame_valid`` (B, M*Bf) bool. Training with N > 0 adds
``aux_losses`` and ``affinity`` (B, K, K), the A^ of Eq. (2).

Where each default comes from (a value the paper does not give is never credited to it):

- The paper (as the project's reference notes on its text record it): ``num_siamese`` N = 8 (12 gave
  a slight further gain); ``knowledge="skg"`` (SKG + SKR, its full model).
- Recorded as the paper's in the project's reference notes, but absent from the slide deck the issue-23
  review read, and the full text could not be checked here: ``alpha`` 1.0 and ``omega`` 0.5. Unverified;
  nothing else here depends on them.
- BERT-base, the paper's text / cross-modal transformer: ``hidden_dim`` 768, ``num_heads`` 12,
  ``dropout`` 0.1, the N(0, 0.02) initialiser of the [CLS] and type embeddings. GloVe: ``word_dim`` 300.
  The ``siasamrea`` feature set's default backbone: ``frames_dim`` 2048 (ResNet-152 pool5; the paper
  fine-tunes a ResNet-50 end to end).
- The paper's inference claim ("no extra inference cost"): ``eval_clips`` 1, the base network on one clip.
  Several clips (``eval_clips`` > 1) are ClipBERT's test-time consensus, an inference setting; it did not
  help on the demo layouts (docs/benchmarks.md, "SiaSamRea demo figures"), so it is not the default.
- Ours (the paper gives no value, or the feature-based form needs one): ``num_layers`` 2, ``lstm_layers``
  1, ``clip_frames`` 8, ``frame_interval`` 2, ``siamese_shift`` 4, ``affinity_dim`` 256,
  ``detach_predictions``, ``knowledge_loss="gt"`` and ``gt_clips="all"`` (the readings above, chosen so
  that the soft label does not collapse onto the anchor), ``use_subtitles`` (the How2QA task's input),
  ``subtitle_max_len`` 64, ``text_max_len`` 64.
- Training (``train.TrainConfig`` and ``train.config.paper_train_defaults``): Adam, lr 1e-4, weight decay
  5e-6, batch 64, 30 epochs, MultiStepLR([10, 15, 19, 23, 27], 0.5) (MSPAN's official code) and the
  trainer's summed hinge with margin 1 -- the toolkit's shared defaults, not this paper's (whose
  fine-tuning schedule of pre-trained networks does not carry over to a model trained from scratch);
  ``grad_clip`` 5.0 and mixed precision (``amp=auto``) from ClipBERT's fine-tuning configs, the model the
  paper builds on (``train.config.CLIP_AND_PRECISION``). They train multiple choice on short synthetic
  videos (``tests/train/test_siasamrea_train.py``, ``test_multiple_choice_learns_at_the_default_settings``;
  before the type-embedding fix above they stayed at chance).

Published numbers. None of the paper's figures (MSRVTT-QA 41.6, MSVD-QA 45.5, ActivityNet-QA 39.8,
How2QA 84.1, TGIF-QA 79.7 / 85.3 / 60.2 / 3.61) can be reproduced by this feature-based form: they need
the paper's end-to-end ClipBERT network with its image-text pre-training, which the toolkit does not
have. What a run needs to follow the paper as closely as this form can: the defaults above (N = 8,
``knowledge="skg"``, alpha 1, omega 0.5), ``use_subtitles`` on How2QA, and for the pre-trained text side
``text_encoder=transformer`` with a BERT-base checkpoint (docs/reproduce.md, "SiaSamRea").
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F
import torch.utils.checkpoint
from torch import Tensor, nn

from models.layers import QuestionEncoder

__all__ = [
    "FrameEncoder",
    "FusionLayer",
    "PretrainedTextEncoder",
    "SiaSamRea",
    "SiaSamReaConfig",
    "affinity",
    "clip_range",
    "knowledge_loss",
    "sample_clips",
    "siamese_loss",
    "siasamrea",
    "soft_label",
]

TASK_TYPES = ("open", "mc", "count")
KNOWLEDGE = ("skg", "uniform")
KNOWLEDGE_LOSSES = ("gt", "siamese")
GT_CLIPS = ("all", "anchor")
TEXT_ENCODERS = ("glove", "transformer")
INPUTS = ("features", "frames")


# --------------------------------------------------------------------------------------------------
# Config
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SiaSamReaConfig:
    """SiaSamRea hyper-parameters (where each default comes from: the module docstring).

    Attributes:
        frames_dim: size of the ``frames`` feature (2048, ResNet-152 pool5; filled from the features).
        hidden_dim: H, model width (768, BERT-base's); also the BiLSTM output size.
        num_layers: cross-modal transformer layers (2, ours; the paper fine-tunes a 12-layer BERT).
        num_heads: attention heads (12, BERT-base's).
        word_dim: word-vector size (300, GloVe).
        lstm_layers: BiLSTM layers of the question encoder (1).
        dropout: dropout in the transformer and heads (0.1, BERT's).
        clip_frames: Bf, feature frames per clip (8, ours).
        frame_interval: feature frames between two frames of a clip (2, ours: 0.5 s at 4 fps).
        siamese_shift: siamese clips start within this many feature frames of the anchor (4, ours).
        num_siamese: N siamese clips per anchor (8, the paper's choice; 0 = the base network).
        knowledge: ``"skg"`` (Eq. 1-2 affinities) or ``"uniform"`` (SKR without SKG).
        alpha: weight of L_siamese in Eq. (8) (1.0, recorded as the paper's; unverified).
        omega: weight of the propagated term in Eq. (5) (0.5, recorded as the paper's; unverified).
        affinity_dim: output size of the SKG projection F (256, ours).
        detach_predictions: stop gradients through the clip predictions inside the soft label (True).
        gt_clips: which sampled clips L_gt trains: all (the anchor and its N siamese clips, each a
            clip-text pair answering the question; the trainer averages their losses; ours, default) or
            anchor (the anchor alone).
        knowledge_loss: what trains F, W1, W2: gt (the ground-truth loss on the soft label Q, which is a
            fixed target of L_siamese; ours, default) or siamese (L_siamese itself; collapses Q onto the
            anchor's own prediction).
        eval_clips: clips scored over the video (or segment) at evaluation and in vqa-answer, their
            outputs averaged (1 = the centred clip); an inference setting --eval-only may change.
        use_subtitles: read the dataset's subtitles (How2QA) with the question (True).
        subtitle_max_len: subtitle tokens read per question (64, ours).
        freeze_embeddings: keep the GloVe word vectors fixed.
        text_encoder: question encoder, glove (GloVe + BiLSTM) or transformer (a local Hugging Face
            checkpoint, model.text_encoder_path; needs the `text` extra).
        text_encoder_path: transformer only: the local Hugging Face checkpoint directory (config, weights,
            tokenizer); never downloaded, its files' sha256 are recorded and checked on resume, eval and
            vqa-answer.
        freeze_text_encoder: transformer only: keep its weights fixed (default false: fine-tuned with
            train.lr, as the paper fine-tunes BERT).
        text_max_len: transformer only: tokens per question (mc: per question + candidate pair) incl.
            special tokens (64, ours).
        input: features (the extracted siasamrea feature set) or frames (raw frames through the image
            backbone, trained end to end; the paper's setting).
        backbone: frames only: the image backbone (resnet50, the paper's; resnet18/101/152).
        backbone_weights: frames only: pretrained (a local weight file, sha256 recorded) or random (tests).
        backbone_checkpoint: frames only: a local weight file of the backbone (default: the torch cache).
        frame_size: frames only: input side S of the centre-cropped frames (224, ours).
        frame_fps: frames only: rate of the frame grid clips are drawn from (4.0, as the feature set).
        grad_checkpoint: frames only: recompute the backbone's stages in the backward pass (less memory).
        freeze_bn: frames only: BatchNorm layers in eval mode and their parameters fixed (True).
    """

    frames_dim: int = 2048
    hidden_dim: int = 768
    num_layers: int = 2
    num_heads: int = 12
    word_dim: int = 300
    lstm_layers: int = 1
    dropout: float = 0.1
    clip_frames: int = 8
    frame_interval: int = 2
    siamese_shift: int = 4
    num_siamese: int = 8
    knowledge: Literal["skg", "uniform"] = "skg"
    alpha: float = 1.0
    omega: float = 0.5
    affinity_dim: int = 256
    detach_predictions: bool = True
    knowledge_loss: Literal["gt", "siamese"] = "gt"
    gt_clips: Literal["all", "anchor"] = "all"
    eval_clips: int = 1
    use_subtitles: bool = True
    subtitle_max_len: int = 64
    freeze_embeddings: bool = False
    text_encoder: Literal["glove", "transformer"] = "glove"
    text_encoder_path: str | None = None
    freeze_text_encoder: bool = False
    text_max_len: int = 64
    input: Literal["features", "frames"] = "features"
    backbone: str = "resnet50"
    backbone_weights: Literal["pretrained", "random"] = "pretrained"
    backbone_checkpoint: str | None = None
    frame_size: int = 224
    frame_fps: float = 4.0
    grad_checkpoint: bool = False
    freeze_bn: bool = True

    def __post_init__(self) -> None:
        if self.input not in INPUTS:
            raise ValueError(f"input must be one of {INPUTS}, got {self.input!r}")
        if self.backbone_weights not in ("pretrained", "random"):
            raise ValueError(f"backbone_weights must be pretrained or random, got {self.backbone_weights!r}")
        if self.frame_size < 32 or not self.frame_fps > 0:
            raise ValueError(f"frame_size must be >= 32 and frame_fps > 0, got {self.frame_size}, "
                             f"{self.frame_fps}")
        if self.text_encoder not in TEXT_ENCODERS:
            raise ValueError(f"text_encoder must be one of {TEXT_ENCODERS}, got {self.text_encoder!r}")
        if self.text_encoder == "transformer" and not self.text_encoder_path:
            raise ValueError("text_encoder=transformer needs text_encoder_path (a local Hugging Face "
                             "checkpoint directory)")
        if self.text_encoder == "glove" and self.text_encoder_path:
            raise ValueError(f"text_encoder_path={self.text_encoder_path!r} is set but text_encoder=glove; "
                             "set text_encoder=transformer or drop the path")
        for name in ("frames_dim", "hidden_dim", "num_layers", "num_heads", "word_dim", "lstm_layers",
                     "clip_frames", "frame_interval", "affinity_dim", "text_max_len", "subtitle_max_len"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("siamese_shift", "num_siamese"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.hidden_dim % 2 or self.hidden_dim % self.num_heads:
            raise ValueError(f"hidden_dim ({self.hidden_dim}) must be even and divisible by num_heads "
                             f"({self.num_heads})")
        if self.knowledge not in KNOWLEDGE:
            raise ValueError(f"knowledge must be one of {KNOWLEDGE}, got {self.knowledge!r}")
        if self.knowledge_loss not in KNOWLEDGE_LOSSES:
            raise ValueError(f"knowledge_loss must be one of {KNOWLEDGE_LOSSES}, got {self.knowledge_loss!r}")
        if self.gt_clips not in GT_CLIPS:
            raise ValueError(f"gt_clips must be one of {GT_CLIPS}, got {self.gt_clips!r}")
        if self.eval_clips < 1:
            raise ValueError(f"eval_clips must be >= 1, got {self.eval_clips}")
        if not 0.0 <= self.omega <= 1.0:
            raise ValueError(f"omega must be in [0, 1], got {self.omega}")
        if self.alpha < 0:
            raise ValueError(f"alpha must be >= 0, got {self.alpha}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")


# --------------------------------------------------------------------------------------------------
# Siamese sampling
# --------------------------------------------------------------------------------------------------


def clip_range(frames_mask: Tensor, frame_times: Tensor | None = None,
               segment: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """The rows of each video that clips may use: the whole video, or the question's segment.

    Args:
        frames_mask: (B, T) bool, valid (unpadded) frames; valid frames come first.
        frame_times: (B, T) seconds of each frame (needed with ``segment``).
        segment: (B, 2) float (start, end) seconds, NaN where a question has none.

    Returns:
        ``(lo, hi)``: (B,) int64 each, rows ``lo <= t < hi``; at least one frame. Inside a segment:
        the frames whose time lies in [start, end], or the frame nearest to it when none does.
    """
    length = frames_mask.long().sum(1).clamp(min=1)  # (B,)
    lo = torch.zeros_like(length)
    hi = length.clone()
    if segment is None or frame_times is None:
        return lo, hi
    seg = segment.to(frame_times.dtype)
    has = torch.isfinite(seg).all(1)  # (B,)
    t = frame_times.masked_fill(~frames_mask, float("inf"))  # (B, T) padding after every real time
    s_lo = (t < seg[:, :1]).long().sum(1)  # first row with time >= start
    s_hi = (t <= seg[:, 1:]).long().sum(1)  # one past the last row with time <= end
    s_lo = torch.minimum(s_lo, length - 1)
    s_hi = torch.maximum(torch.minimum(s_hi, length), s_lo + 1)
    return torch.where(has, s_lo, lo), torch.where(has, s_hi, hi)


def sample_clips(lo: Tensor, hi: Tensor, *, clip_frames: int, interval: int, num_siamese: int = 0,
                 shift: int = 4, train: bool = False, eval_clips: int = 1,
                 generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
    """Frame rows of the anchor clip and its siamese clips, or of the evaluation clips (all in ``[lo, hi)``).

    Args:
        lo, hi: (B,) int64 usable rows per video (:func:`clip_range`).
        clip_frames: Bf frames per clip.
        interval: frames between consecutive clip frames (shrunk per video so a clip fits when it can).
        num_siamese: N siamese clips (training only).
        shift: siamese starts differ from the anchor's by 1..shift frames (either side, clamped).
        train: random anchor start (else deterministic starts: see ``eval_clips``).
        eval_clips: M clips when not ``train``: one centred clip for M = 1, else M starts evenly spaced
            from the first to the last possible start (the first clip begins at ``lo``, the last ends at
            ``hi``), so that together they cover the whole range.
        generator: torch generator for the draws (default: the global CPU stream, which checkpoints save).

    Returns:
        ``(index, valid)``: (B, K, Bf) int64 rows and (B, K, Bf) bool; training K = 1 + N with the anchor
        clip 0, evaluation K = M. Rows past the end repeat the last usable row and are marked invalid.
    """
    lo, hi = lo.cpu().long(), hi.cpu().long()
    n = (hi - lo).clamp(min=1)  # (B,)
    step = torch.full_like(n, interval)
    if clip_frames > 1:
        step = torch.minimum(step, ((n - 1) // (clip_frames - 1)).clamp(min=1))
    span = (clip_frames - 1) * step + 1  # (B,)
    room = (n - span).clamp(min=0)  # start offsets 0..room keep the clip inside
    if train:
        anchor = (torch.rand(n.shape, generator=generator) * (room + 1).double()).long().minimum(room)
    else:
        anchor = room // 2
    starts = anchor[:, None]  # (B, 1)
    if not train and eval_clips > 1:
        frac = torch.arange(eval_clips, dtype=torch.float64) / (eval_clips - 1)  # (M,) 0 .. 1
        starts = (frac[None] * room[:, None].double()).round().long()  # (B, M) evenly spaced starts
    if num_siamese > 0:
        size = (n.shape[0], num_siamese)
        mag = torch.randint(1, max(shift, 1) + 1, size, generator=generator) * int(shift > 0)
        sign = torch.randint(0, 2, size, generator=generator) * 2 - 1
        sib = torch.minimum((anchor[:, None] + sign * mag).clamp(min=0), room[:, None])  # (B, N)
        starts = torch.cat([starts, sib], dim=1)  # (B, K)
    offsets = starts[..., None] + step[:, None, None] * torch.arange(clip_frames)  # (B, K, Bf)
    index = lo[:, None, None] + offsets
    valid = index < hi[:, None, None]
    index = torch.minimum(index, (hi - 1)[:, None, None])
    return index, valid


# --------------------------------------------------------------------------------------------------
# Siamese knowledge generation and reasoning
# --------------------------------------------------------------------------------------------------


def affinity(features: Tensor | None, num_clips: int, *, uniform: bool = False) -> Tensor:
    """Eq. (1)-(2): the clip affinity matrix A^ with a zero diagonal and rows summing to 1.

    Args:
        features: (B, K, E) projected clip features F(h) (ignored with ``uniform``).
        num_clips: K (>= 2).
        uniform: SKR without SKG: A^(i, j) = 1 / (K - 1) for every j != i.

    Returns:
        (B, K, K) float (B = 1 with ``uniform`` and no features).
    """
    eye = torch.eye(num_clips, dtype=torch.bool, device=None if features is None else features.device)
    if uniform:
        out = (~eye).float() / (num_clips - 1)
        return out.expand(features.shape[0], -1, -1) if features is not None else out[None]
    z = F.normalize(features.float(), dim=-1)  # sigma: L2 normalisation
    sim = z @ z.transpose(1, 2)  # (B, K, K)  Eq. (1)
    return sim.masked_fill(eye, float("-inf")).softmax(dim=-1)  # Eq. (2): self-affinity removed


def soft_label(aff: Tensor, preds: Tensor, w1: Tensor, w2: Tensor, omega: float, *,
               normalise: bool = True) -> Tensor:
    """Eq. (3)-(5): the soft label Q of the anchor from the K clips' predictions.

    Args:
        aff: (B, K, K) A^.
        preds: (B, K, A) clip predictions P (probabilities; counts: (B, K, 1)).
        w1, w2: (K,) fusion weights W1, W2.
        omega: weight of the propagated term.
        normalise: divide by the sum over answers (Eq. 5; not for counts).

    Returns:
        (B, A) soft label.
    """
    propagated = aff @ preds  # (B, K, A)  Eq. (3): p^_i = sum_{j != i} A^(i, j) p_j
    fused = torch.einsum("k,bka->ba", w1, propagated)  # Eq. (4): W1 A^ P
    q = omega * fused + (1.0 - omega) * torch.einsum("k,bka->ba", w2, preds)  # Eq. (5)
    if normalise:
        q = q / q.sum(dim=-1, keepdim=True).clamp(min=1e-12)
    return q


def siamese_loss(task_type: str, anchor_out: Tensor, q: Tensor) -> Tensor:
    """L_siamese of Eq. (8): cross-entropy between Q and the anchor's prediction (count: squared error).

    Args:
        task_type: ``"open"``, ``"mc"`` or ``"count"``.
        anchor_out: (B, A) logits / (B, C) scores / (B,) counts of the anchor clip.
        q: (B, A) / (B, C) soft label, or (B, 1) soft count.
    """
    if task_type == "count":
        return F.mse_loss(anchor_out.float(), q.float().view(-1))
    return -(q.float() * F.log_softmax(anchor_out.float(), dim=-1)).sum(-1).mean()


def knowledge_loss(task_type: str, q: Tensor, answer: Tensor) -> Tensor:
    """The ground-truth loss on the soft label (``knowledge_loss="gt"``, ours): -log Q[answer] (count: the
    squared error of the soft count), averaged over the questions whose answer is known.

    Args:
        task_type: ``"open"``, ``"mc"`` or ``"count"``.
        q: (B, A) / (B, C) soft label, or (B, 1) soft count.
        answer: (B,) class (-1 = out of vocabulary, skipped) / candidate index, or count.
    """
    if task_type == "count":
        return F.mse_loss(q.float().view(-1), answer.float().view(-1))
    valid = answer >= 0
    nll = -q.float().gather(1, answer.clamp(min=0).long().view(-1, 1)).squeeze(1).clamp(min=1e-12).log()
    return torch.where(valid, nll, torch.zeros_like(nll)).sum() / valid.sum().clamp(min=1)


# --------------------------------------------------------------------------------------------------
# Blocks (the base network's parts)
# --------------------------------------------------------------------------------------------------


class FusionLayer(nn.Module):
    """A pre-norm transformer block (self-attention + MLP) that can return its attention weights.

    Forward: ``x`` (N, S, H), ``pad`` (N, S) bool True = padding -> ``(x, attn)``, attn (N, S, S) heads
    averaged (or None).
    """

    def __init__(self, dim: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = nn.MultiheadAttention(dim, heads, dropout=dropout, batch_first=True)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(
            nn.Linear(dim, 4 * dim), nn.GELU(), nn.Dropout(dropout), nn.Linear(4 * dim, dim)
        )
        self.drop = nn.Dropout(dropout)

    def forward(self, x: Tensor, pad: Tensor, *, need_weights: bool = False) -> tuple[Tensor, Tensor | None]:
        h = self.norm1(x)
        a, w = self.attn(h, h, h, key_padding_mask=pad, need_weights=need_weights, average_attn_weights=True)
        x = x + self.drop(a)
        x = x + self.drop(self.mlp(self.norm2(x)))
        return x, w


class PretrainedTextEncoder(nn.Module):
    """A pre-trained transformer over token ids, its last hidden states projected to the model width.

    Args:
        encoder: the loaded module, called as ``encoder(input_ids=, attention_mask=, token_type_ids=)``
            and returning an object with ``last_hidden_state`` (B, L, D) (a Hugging Face ``AutoModel``).
        in_dim: D, its hidden size; out_dim: H; dropout: after the projection.
        freeze: keep the encoder's weights fixed and the encoder in eval mode (no dropout).

    Forward: ``ids``, ``mask`` (1 = token), ``types`` (N, L) -> (N, L, H).
    """

    def __init__(self, encoder: nn.Module, *, in_dim: int, out_dim: int, dropout: float = 0.0,
                 freeze: bool = False) -> None:
        super().__init__()
        self.encoder, self.freeze = encoder, freeze
        self.proj = nn.Sequential(nn.Linear(in_dim, out_dim), nn.LayerNorm(out_dim), nn.Dropout(dropout))
        if freeze:
            self.encoder.requires_grad_(False)
            self.encoder.eval()

    def train(self, mode: bool = True) -> PretrainedTextEncoder:
        super().train(mode)
        if self.freeze:
            self.encoder.eval()
        return self

    def forward(self, ids: Tensor, mask: Tensor, types: Tensor | None = None) -> Tensor:
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.freeze):
            hidden = self.encoder(input_ids=ids, attention_mask=mask.long(), token_type_ids=types)
        return self.proj(hidden.last_hidden_state)  # (N, L, H)


class FrameEncoder(nn.Module):
    """Raw frames -> a clip's visual tokens (``input="frames"``): an image backbone fine-tuned end to end.

    Args:
        backbone: a torchvision-style ResNet (``conv1``, ``bn1``, ``relu``, ``maxpool``, ``layer1..4``)
            with its weights loaded; its classifier is not used.
        dim: D, the channels of its last map; out_dim: H; grid: the largest map side (S / 32, rounded up).
        mean, std: the per-channel RGB normalisation of its weights (ImageNet's by default).
        freeze_bn: BatchNorm layers stay in eval mode (running statistics fixed) with their affine
            parameters not trained, as usual when fine-tuning on small batches.
        grad_checkpoint: recompute each stage in the backward pass instead of keeping its activations.
        dropout: after the projection.

    Forward: ``clips`` (B, K, Bf, S, S, 3) uint8, ``valid`` (B, K, Bf) bool -> tokens (B, K, h*w, H) and
    the map side ``(h, w)``.
    """

    def __init__(self, backbone: nn.Module, *, dim: int, out_dim: int, grid: int, dropout: float = 0.0,
                 mean: tuple[float, ...] = (0.485, 0.456, 0.406),
                 std: tuple[float, ...] = (0.229, 0.224, 0.225), freeze_bn: bool = True,
                 grad_checkpoint: bool = False) -> None:
        super().__init__()
        self.backbone, self.freeze_bn, self.grad_checkpoint = backbone, freeze_bn, grad_checkpoint
        self.backbone.requires_grad_(True)
        if freeze_bn:
            for m in self._batch_norms():
                m.requires_grad_(False)
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)
        self.proj = nn.Sequential(nn.Linear(dim, out_dim), nn.LayerNorm(out_dim), nn.Dropout(dropout))
        self.row = nn.Embedding(grid, out_dim)  # 2-D position of a map cell
        self.col = nn.Embedding(grid, out_dim)

    def _batch_norms(self) -> list[nn.Module]:
        return [m for m in self.backbone.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]

    def train(self, mode: bool = True) -> FrameEncoder:
        super().train(mode)
        if self.freeze_bn:
            for m in self._batch_norms():
                m.eval()
        return self

    def feature_map(self, x: Tensor) -> Tensor:
        """(N, 3, S, S) normalised -> (N, D, S/32, S/32), each stage checkpointed when asked."""
        m = self.backbone
        x = m.maxpool(m.relu(m.bn1(m.conv1(x))))  # (N, 64, S/4, S/4)
        for stage in (m.layer1, m.layer2, m.layer3, m.layer4):
            if self.grad_checkpoint and self.training and torch.is_grad_enabled():
                x = torch.utils.checkpoint.checkpoint(stage, x, use_reentrant=False)
            else:
                x = stage(x)
        return x

    def forward(self, clips: Tensor, valid: Tensor) -> tuple[Tensor, tuple[int, int]]:
        B, K, Bf, S = clips.shape[:4]
        x = clips.reshape(B * K * Bf, S, S, 3).permute(0, 3, 1, 2).float()  # (N, 3, S, S), 0..255
        x = (x / 255.0 - self.mean) / self.std
        fmap = self.feature_map(x)  # (N, D, h, w)
        D, h, w = fmap.shape[1:]
        fmap = fmap.view(B, K, Bf, D, h, w)
        weight = valid.to(fmap.dtype).view(B, K, Bf, 1, 1, 1)
        clip = (fmap * weight).sum(2) / weight.sum(2).clamp(min=1)  # (B, K, D, h, w) temporal mean pooling
        cells = clip.flatten(3).transpose(2, 3)  # (B, K, h*w, D)
        # looked up, not sliced: with h = w = 1 a slice of each full table made autograd hand both tables
        # one gradient tensor, and a second backward (gradient accumulation) then added into it twice
        rows = self.row(torch.arange(h, device=cells.device))  # (h, H)
        cols = self.col(torch.arange(w, device=cells.device))  # (w, H)
        pos = (rows[:, None] + cols[None, :]).reshape(h * w, -1)  # (h*w, H)
        return self.proj(cells) + pos, (int(h), int(w))


# --------------------------------------------------------------------------------------------------
# Model
# --------------------------------------------------------------------------------------------------


class SiaSamRea(nn.Module):
    """The base VideoQA network plus siamese sampling and reasoning during training.

    Args (keyword-only):
        vocab_size: question vocabulary size.
        num_answers: A (open-ended answer classes).
        task_type: ``"open"``, ``"mc"`` or ``"count"``.
        embeddings: optional (vocab_size, word_dim) GloVe matrix.
        pretrained_text: ``text_encoder="transformer"`` only: the loaded pre-trained module (its hidden
            size read from ``pretrained_text.config.hidden_size``).
        backbone_module, pixel_mean, pixel_std: ``input="frames"`` only: the image backbone module and
            the normalisation its weights expect.
        **settings: the fields of :class:`SiaSamReaConfig` (``hidden_dim=...``, ``num_siamese=...``), each
            checked by it; a field not given takes the paper's default. They are kept as ``self.cfg``.

    Forward: the batch contract (``frames`` (B, T, Da), ``frames_mask`` (B, T), ``frame_times`` (B, T),
    ``question``/``question_len``, ``candidates``/``candidates_len`` for mc, optional ``segment`` (B, 2)).
    Returns the dict described in the module docstring.
    """

    def __init__(self, *, vocab_size: int, num_answers: int, task_type: str,
                 embeddings: Any = None, pretrained_text: nn.Module | None = None,
                 backbone_module: nn.Module | None = None,
                 pixel_mean: tuple[float, ...] = (0.485, 0.456, 0.406),
                 pixel_std: tuple[float, ...] = (0.229, 0.224, 0.225), **settings: Any) -> None:
        super().__init__()
        unknown = sorted(set(settings) - set(SiaSamReaConfig.__dataclass_fields__))
        if unknown:
            raise TypeError(f"SiaSamRea got unknown settings {unknown}; its fields are SiaSamReaConfig's")
        cfg = SiaSamReaConfig(**settings)  # checks every value (__post_init__)
        if task_type not in TASK_TYPES:
            raise ValueError(f"task_type must be one of {TASK_TYPES}, got {task_type!r}")
        if task_type == "open" and num_answers < 1:
            raise ValueError(f"an open-ended model needs num_answers >= 1, got {num_answers}")
        self.cfg, self.task_type = cfg, task_type
        H = cfg.hidden_dim
        if cfg.text_encoder == "transformer":
            if pretrained_text is None:
                raise ValueError("text_encoder=transformer: pass the loaded module (train.text_encoder "
                                 "loads it from model.text_encoder_path)")
            self.text = PretrainedTextEncoder(pretrained_text, in_dim=int(pretrained_text.config.hidden_size),
                                              out_dim=H, dropout=cfg.dropout, freeze=cfg.freeze_text_encoder)
        else:
            self.text = QuestionEncoder(vocab_size, embed_dim=cfg.word_dim, hidden_dim=H,
                                        num_layers=cfg.lstm_layers, embeddings=embeddings,
                                        freeze_embeddings=cfg.freeze_embeddings)
        if cfg.input == "frames":
            if backbone_module is None:
                raise ValueError("input=frames: pass the image backbone module (train/frames.py builds it "
                                 "from model.backbone)")
            self.visual = FrameEncoder(backbone_module, dim=cfg.frames_dim, out_dim=H,
                                       grid=-(-cfg.frame_size // 32),
                                       dropout=cfg.dropout, mean=pixel_mean, std=pixel_std,
                                       freeze_bn=cfg.freeze_bn, grad_checkpoint=cfg.grad_checkpoint)
        else:
            self.frame_proj = nn.Sequential(
                nn.Linear(cfg.frames_dim, H), nn.LayerNorm(H), nn.Dropout(cfg.dropout)
            )
            self.frame_pos = nn.Embedding(cfg.clip_frames, H)
        self.type_embed = nn.Embedding(2, H)  # 0 text, 1 frame
        self.cls = nn.Parameter(torch.zeros(1, 1, H))
        nn.init.normal_(self.cls, std=0.02)
        nn.init.normal_(self.type_embed.weight, std=0.02)  # BERT's; N(0, 1) hid the words (module doc)
        self.layers = nn.ModuleList(FusionLayer(H, cfg.num_heads, cfg.dropout) for _ in range(cfg.num_layers))
        self.norm = nn.LayerNorm(H)
        out_dim = num_answers if task_type == "open" else 1
        self.head = nn.Sequential(nn.Linear(H, H), nn.GELU(), nn.Dropout(cfg.dropout), nn.Linear(H, out_dim))
        K = cfg.num_siamese + 1
        if cfg.num_siamese > 0:
            self.skg = nn.Linear(H, cfg.affinity_dim)  # F of Eq. (1)
            self.w1 = nn.Parameter(torch.zeros(K))  # W1 of Eq. (5), softmax-normalised
            self.w2 = nn.Parameter(torch.zeros(K))  # W2 of Eq. (5)

    # ---------------------------------------------------------------- text, once per question
    def encode_text(self, batch: dict[str, Any]) -> tuple[Tensor, Tensor]:
        """Question (and candidate) tokens: ``(tokens (B, C', Lt, H), padding (B, C', Lt))``, C' = C or 1."""
        if isinstance(self.text, PretrainedTextEncoder):
            ids, mask = batch["text_ids"], batch["text_mask"]  # (B, C', Lt)
            types = batch.get("text_type_ids")
            B, Cp, Lt = ids.shape
            words = self.text(ids.reshape(B * Cp, Lt), mask.reshape(B * Cp, Lt),
                              None if types is None else types.reshape(B * Cp, Lt))  # (B*C', Lt, H)
            return words.view(B, Cp, Lt, -1), ~mask.bool()
        q = batch["question"]
        qlen = batch["question_len"]
        words, _ = self.text(q, qlen)  # (B, L, H)
        L = q.shape[1]
        q_pad = torch.arange(L, device=q.device)[None] >= qlen.clamp(min=1)[:, None]  # (B, L)
        tokens, pad = words[:, None], q_pad[:, None]  # (B, 1, L, H), (B, 1, L)
        if self.task_type == "mc":
            cand, clen = batch["candidates"], batch["candidates_len"]  # (B, C, Lc), (B, C)
            B, C, Lc = cand.shape
            cwords, _ = self.text(cand.reshape(B * C, Lc), clen.reshape(B * C))  # (B*C, Lc, H)
            cwords = cwords.view(B, C, Lc, -1)
            c_pad = torch.arange(Lc, device=q.device)[None, None] >= clen.clamp(min=1)[..., None]  # (B,C,Lc)
            tokens = torch.cat([words[:, None].expand(-1, C, -1, -1), cwords], dim=2)  # (B, C, L+Lc, H)
            pad = torch.cat([q_pad[:, None].expand(-1, C, -1), c_pad], dim=2)
        if self.cfg.use_subtitles and "subtitle" in batch:  # [question; candidate; subtitle]
            swords, s_pad = self.encode_subtitle(batch)  # (B, Ls, H), (B, Ls)
            Cp = tokens.shape[1]
            tokens = torch.cat([tokens, swords[:, None].expand(-1, Cp, -1, -1)], dim=2)
            pad = torch.cat([pad, s_pad[:, None].expand(-1, Cp, -1)], dim=2)
        return tokens, pad

    def encode_subtitle(self, batch: dict[str, Any]) -> tuple[Tensor, Tensor]:
        """The question's subtitle text through the question encoder, its first ``subtitle_max_len``
        tokens: ``(tokens (B, Ls, H), padding (B, Ls))``; a question without subtitle text is all padding."""
        sub = batch["subtitle"][:, : self.cfg.subtitle_max_len]  # (B, Ls)
        slen = batch["subtitle_len"].clamp(max=sub.shape[1])  # (B,), 0 = none
        swords, _ = self.text(sub, slen.clamp(min=1))  # (B, Ls, H)
        s_pad = torch.arange(sub.shape[1], device=sub.device)[None] >= slen[:, None]  # (B, Ls)
        return swords, s_pad

    # ---------------------------------------------------------------- the base network on K clips
    def reason(self, frames: Tensor, index: Tensor, valid: Tensor, text: Tensor,
               text_pad: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Cross-modal transformer on every (clip, candidate) pair.

        Args:
            frames: (B, T, Da); index, valid: (B, K, Bf); text: (B, C', Lt, H); text_pad: (B, C', Lt).

        Returns:
            ``(out, cls, attn)``: predictions (B, K, C', out_dim), CLS features (B, K, C', H), and the
            CLS attention on the frame tokens (B, K, C', Bf).
        """
        B = index.shape[0]
        rows = torch.arange(B, device=frames.device)[:, None, None]
        clip = frames[rows, index.to(frames.device)]  # (B, K, Bf, Da)
        v = self.frame_proj(clip) + self.frame_pos.weight  # (B, K, Bf, H)
        return self.reason_tokens(v, valid.to(frames.device), text, text_pad)

    def reason_tokens(self, v: Tensor, valid: Tensor, text: Tensor,
                      text_pad: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """:meth:`reason` on given visual tokens ``v`` (B, K, Bf, H) (frames: Bf = the clip's map cells)
        with ``valid`` (B, K, Bf) bool."""
        B, K, Bf = v.shape[:3]
        Cp, Lt = text.shape[1], text.shape[2]
        v = v + self.type_embed.weight[1]  # (B, K, Bf, H)
        t = text + self.type_embed.weight[0]  # (B, C', Lt, H)
        H = v.shape[-1]
        x = torch.cat([
            self.cls.expand(B, K, Cp, 1, H),
            t[:, None].expand(B, K, Cp, Lt, H),
            v[:, :, None].expand(B, K, Cp, Bf, H),
        ], dim=3).reshape(B * K * Cp, 1 + Lt + Bf, H)  # (B*K*C', S, H)
        pad = torch.cat([
            torch.zeros(B, K, Cp, 1, dtype=torch.bool, device=v.device),
            text_pad[:, None].expand(B, K, Cp, Lt),
            ~valid[:, :, None].expand(B, K, Cp, Bf),
        ], dim=3).reshape(B * K * Cp, -1)
        attn = None
        for i, layer in enumerate(self.layers):
            x, attn = layer(x, pad, need_weights=i == len(self.layers) - 1)
        cls = self.norm(x[:, 0])  # (B*K*C', H)
        out = self.head(cls).view(B, K, Cp, -1)
        a = attn[:, 0, 1 + Lt:].float().view(B, K, Cp, Bf)  # CLS -> frame tokens
        a = a / a.sum(-1, keepdim=True).clamp(min=1e-12)
        return out, cls.view(B, K, Cp, H), a

    def _task_output(self, out: Tensor) -> Tensor:
        """(B, K, C', out_dim) -> logits (B, K, A) | scores (B, K, C) | counts (B, K)."""
        if self.task_type == "open":
            return out[:, :, 0]
        return out[..., 0] if self.task_type == "mc" else out[:, :, 0, 0]

    def forward(self, batch: dict[str, Any]) -> dict[str, Any]:
        if self.cfg.input == "frames":
            return self.forward_frames(batch)
        cfg = self.cfg
        frames = batch["frames"]  # (B, T, Da)
        mask = batch.get("frames_mask")
        if mask is None:
            mask = torch.ones(frames.shape[:2], dtype=torch.bool, device=frames.device)
        if frames.dim() != 3 or frames.shape[-1] != cfg.frames_dim:
            raise ValueError(f"frames must be (B, T, {cfg.frames_dim}), got {tuple(frames.shape)}; set "
                             f"model.frames_dim to the features' size")
        lo, hi = clip_range(mask.cpu(), _cpu(batch.get("frame_times")), _cpu(batch.get("segment")))
        siamese = self.training and cfg.num_siamese > 0
        index, valid = sample_clips(lo, hi, clip_frames=cfg.clip_frames, interval=cfg.frame_interval,
                                    num_siamese=cfg.num_siamese if siamese else 0, shift=cfg.siamese_shift,
                                    train=self.training, eval_clips=1 if self.training else cfg.eval_clips)
        text, text_pad = self.encode_text(batch)  # once per question, shared by the K clips
        out, cls, attn = self.reason(frames, index, valid, text, text_pad)
        return self._outputs(out, cls, attn, index.to(frames.device), valid.to(frames.device), batch,
                             siamese=siamese)

    def forward_frames(self, batch: dict[str, Any]) -> dict[str, Any]:
        """``input="frames"``: ``clips`` (B, K, Bf, S, S, 3) uint8 of the clips the data path sampled
        (training: the anchor and N siamese clips; evaluation: the M evaluation clips), ``clip_valid``
        (B, K, Bf) and ``clip_index`` (B, K, Bf) source frames."""
        clips, valid, index = batch["clips"], batch["clip_valid"].bool(), batch["clip_index"]
        if clips.dim() != 6 or clips.shape[-1] != 3 or clips.dtype != torch.uint8:
            raise ValueError(f"clips must be uint8 (B, K, Bf, S, S, 3), got {clips.dtype} "
                             f"{tuple(clips.shape)}")
        v, _ = self.visual(clips, valid)  # (B, K, h*w, H)
        cells = torch.ones(v.shape[:3], dtype=torch.bool, device=v.device)
        text, text_pad = self.encode_text(batch)  # once per question, shared by the K clips
        out, cls, grid_attn = self.reason_tokens(v, cells, text, text_pad)
        # the clip's frames enter through their mean: each valid frame weighs the same
        attn = valid.float() / valid.float().sum(-1, keepdim=True).clamp(min=1)  # (B, K, Bf)
        attn = attn[:, :, None].expand(-1, -1, out.shape[2], -1)  # (B, K, C', Bf)
        siamese = self.training and self.cfg.num_siamese > 0 and clips.shape[1] > 1
        result = self._outputs(out, cls, attn, index, valid, batch, siamese=siamese)
        result["grid_attention"] = grid_attn.mean(2)  # (B, K, h*w): per clip, candidates averaged
        return result

    def _outputs(self, out: Tensor, cls: Tensor, attn: Tensor, index: Tensor, valid: Tensor,
                 batch: dict[str, Any], *, siamese: bool) -> dict[str, Any]:
        """The result dict from the K clips' outputs (evaluation: their consensus)."""
        preds = self._task_output(out)  # (B, K, ...)
        key = {"open": "logits", "mc": "scores", "count": "count"}[self.task_type]
        if not self.training:  # K = eval_clips clips over the video (or segment): their consensus
            return self._consensus(key, preds, attn, index, valid)
        result: dict[str, Any] = {
            key: preds[:, 0],
            "frame_attention": attn[:, 0, 0] if self.task_type != "mc" else attn[:, 0],
            "frame_index": index[:, 0],
            "frame_valid": valid[:, 0],
        }
        cfg = self.cfg
        if siamese:
            aff, losses = self.siamese_term(preds, cls.mean(dim=2), batch.get("answer"))
            result["affinity"] = aff
            result["aux_losses"] = losses
            if cfg.gt_clips == "all":  # L_gt on every sampled clip (the trainer averages over the K clips)
                result[f"clip_{key}"] = preds  # (B, K, ...)
        return result

    def _consensus(self, key: str, preds: Tensor, attn: Tensor, index: Tensor,
                   valid: Tensor) -> dict[str, Any]:
        """Evaluation over M clips: the mean of their logits / scores / counts (ClipBERT's mean-pooling
        consensus), and the frame attention of all M clips, each clip's weighted 1 / M (M = 1: the clip's)."""
        B, M, Cp, Bf = attn.shape
        att = attn.permute(0, 2, 1, 3).reshape(B, Cp, M * Bf) / M  # (B, C', M*Bf), sums to 1
        return {
            key: preds.mean(dim=1),  # (B, A) | (B, C) | (B,)
            "frame_attention": att if self.task_type == "mc" else att[:, 0],
            "frame_index": index.reshape(B, M * Bf),
            "frame_valid": valid.reshape(B, M * Bf),
        }

    def siamese_term(self, preds: Tensor, clip_features: Tensor,
                     answer: Tensor | None = None) -> tuple[Tensor, dict[str, Tensor]]:
        """SKG + SKR and the training terms from the K clips' outputs (B, K, ...) and features (B, K, H).

        Returns ``(A^ (B, K, K), {"loss_siamese": alpha * L_siamese[, "loss_knowledge": ...]})``. With
        ``knowledge_loss="gt"`` the soft label is a fixed target of L_siamese and F, W1, W2 learn from the
        ground-truth loss on Q (:func:`knowledge_loss`; skipped when ``answer`` is None); with
        ``"siamese"`` they learn from L_siamese itself.
        """
        cfg, K = self.cfg, preds.shape[1]
        uniform = cfg.knowledge == "uniform"
        aff = affinity(None if uniform else self.skg(clip_features), K, uniform=uniform)
        aff = aff.to(preds.device).expand(preds.shape[0], -1, -1)
        if self.task_type == "count":
            p = preds.float()[..., None]  # (B, K, 1)
        else:
            p = preds.float().softmax(dim=-1)  # (B, K, A)
        if cfg.detach_predictions:
            p = p.detach()
        q = soft_label(aff, p, self.w1.softmax(0), self.w2.softmax(0), cfg.omega,
                       normalise=self.task_type != "count")
        if cfg.knowledge_loss == "siamese":
            return aff, {"loss_siamese": cfg.alpha * siamese_loss(self.task_type, preds[:, 0], q)}
        losses = {"loss_siamese": cfg.alpha * siamese_loss(self.task_type, preds[:, 0], q.detach())}
        if answer is not None:
            losses["loss_knowledge"] = knowledge_loss(self.task_type, q, answer.to(q.device))
        return aff, losses


def _cpu(x: Tensor | None) -> Tensor | None:
    return None if x is None else x.detach().cpu()


# --------------------------------------------------------------------------------------------------
# Builder
# --------------------------------------------------------------------------------------------------


def siasamrea(cfg: SiaSamReaConfig | None = None, *, vocab_size: int, num_answers: int, task_type: str,
              embeddings: Any = None, text_encoder: nn.Module | None = None,
              backbone: nn.Module | None = None, pixel_mean: tuple[float, ...] = (0.485, 0.456, 0.406),
              pixel_std: tuple[float, ...] = (0.229, 0.224, 0.225)) -> SiaSamRea:
    """Build SiaSamRea (the registry's builder).

    Args:
        cfg: config (default: ``SiaSamReaConfig()``; where each value comes from: the module docstring).
        vocab_size: question vocabulary size; num_answers: open-ended answer classes;
        task_type: ``"open"``, ``"mc"`` or ``"count"``; embeddings: optional GloVe matrix;
        text_encoder: the loaded pre-trained module for ``cfg.text_encoder == "transformer"``;
        backbone: the image backbone module with its weights for ``cfg.input == "frames"`` (``frames_dim``
            = its last map's channels); pixel_mean, pixel_std: the normalisation its weights expect.
    """
    cfg = SiaSamReaConfig() if cfg is None else cfg
    if not isinstance(cfg, SiaSamReaConfig):
        raise TypeError(f"siasamrea() needs a SiaSamReaConfig, got {type(cfg).__name__}")
    return SiaSamRea(vocab_size=vocab_size, num_answers=num_answers, task_type=task_type,
                     embeddings=embeddings, pretrained_text=text_encoder, backbone_module=backbone,
                     pixel_mean=pixel_mean, pixel_std=pixel_std,
                     **{f: getattr(cfg, f) for f in cfg.__dataclass_fields__})
