"""MASN: Motion-Appearance Synergistic Networks for video question answering.

Seo, Kang, Park and Zhang, "Attend What You Need: Motion-Appearance Synergistic Networks for Video
Question Answering", ACL-IJCNLP 2021. Official code: https://github.com/ahjeongseo/MASN-pytorch (read for
reference and checked numerically against this file; nothing copied).

What this file computes (T frames, M objects per frame, K = T * M nodes, L question words, d hidden)::

    Inputs per frame t: M object features o (appearance RoI, ``objects``; motion RoI, ``motion_objects``),
    their boxes b in R^6, a global appearance vector and a global motion vector.
    Eq. (1)  v_local = FFN([o; d_s; d_t]),  d_s = FFN(b) in R^64,  d_t = sinusoid(t) in R^64
    Eq. (2)  v = FFN([v_local; v_global]),  v_global = W_g g_t + sinusoid_d(t)      -> X in R^{K x d}
             (one node set X^a from appearance, one X^m from motion; o and g are first projected to d)
    Eq. (3)  A = softmax((X W1)(X W2)^T)                                 (row softmax over valid nodes)
    Eq. (4)  GCN(X; A) = ReLU(A ReLU(A X W3) W4);   F = LayerNorm(X + GCN(X; A))
             one graph for appearance (F^a), one for motion (F^m)
    Eq. (5)  H = BAN(F, F^q): bilinear attention (Kim et al., 2018) with g = 4 glimpses between the
             visual nodes F and the word features F^q (L x d); each glimpse's joint feature is projected
             and added to the word features (residual over glimpses). H^a, H^m in R^{L x d}.
    Eq. (6)  U = [H^a; H^m] in R^{2L x d}
    Eq. (7)  P^a = Att(U, H^a, H^a), P^m = Att(U, H^m, H^m), P^all = Att(U, U, U)
             Att(Q, K, V) = softmax((Q W_q)(K W_k)^T / sqrt(d)) (V W_v)
    Eq. (8)  Z^x = LayerNorm(P^x + U) for x in {a, m, all}
    Eq. (9)  z^x = sum of the rows of Z^x;  alpha = softmax_x((W_q' q)(W_k' z^x)^T / sqrt(d))
    Eq. (10) S = sum_x alpha_x Z^x
    Eq. (11) O = LayerNorm(S + FFN(S));  f = attention pooling of the 2L rows of O
    answer: Linear(f): answer logits (open-ended), one value (count), or one score per candidate
    (multiple choice: the question and the candidate are encoded together as one word sequence).

Question: GloVe-300 -> BiLSTM (``models.layers.QuestionEncoder``): word features F^q (L x d) and the
sentence vector q = [final forward state; final backward state] (d).

Masks: a padded frame or object row (``frame_mask`` / ``object_mask`` False) neither gives nor receives
attention in the graphs, the BAN or the pooling, and a padded question word is left out of every softmax
and of the row sums of Eq. (9); changing the values of padded rows changes no output.

Where the paper is silent we follow the official code: the widths of d_s and d_t (64) and of the
sinusoids; FFN in Eq. (1)-(2) = one linear layer; the BAN of Kim et al. (ReLU projections, low-rank
bilinear attention of rank 3d with a bias per glimpse, softmax over all (node, word) pairs, dropout .2 on
the projections' inputs and .5 on the attention's visual side); Att with biases and dropout 0.1 on the
attention maps; FFN of Eq. (11) = Linear-ReLU-Dropout-Linear; attention pooling = MLP score,
masked softmax, weighted sum, linear; LayerNorm without affine parameters in the graphs; a frozen GloVe
table. Where the official code differs from the paper, this file follows the paper by default:

- Adjacency: the official code learns A = softmax(100 * h h^T) with h = ReLU(W2 ReLU(W1 X)) (one
  projection applied to both sides, weight-normalised, a x100 temperature) and stacks three graph
  layers (each Linear, A x, LayerNorm, ReLU, dropout 0.1). We use Eq. (3)-(4): two projections, no
  temperature, two layers.
- Input projections: the official ``WeightDropLinear`` re-creates its weight as a new Parameter on every
  forward, which cuts the gradient: its four 2048 -> d projections never train. Ours train, with dropout
  ``dropout`` on their inputs.
- Question mask: the official mask drops the last real word of a question that fills the padded width
  (20) and, the same way, the last frame of a video that fills all T frames. We keep every real word
  and frame.
- Eq. (9): the official code sums the rows of Z^x including the padded question rows; we sum the valid
  rows only (so padding cannot change the answer).
- LayerNorm of Eq. (8)/(11): the official code divides by (unbiased std + 1e-6) with affine parameters;
  we use ``nn.LayerNorm`` (affine).
- Question encoder: the official code projects GloVe to d with ReLU before a BiLSTM of d units per
  direction and compresses words and final states back to d with ReLU; we use the shared encoder
  (BiLSTM with d/2 units per direction, outputs concatenated).

``official=True`` instead builds the official network exactly (layer structure, activations, dropout
placement, adjacency and temperature, LayerNorm variant, question encoder, row sums over padding, and
the masks dropping the last word / frame), so the released TGIF-QA checkpoints run through
``vqa-convert masn`` (``train/tools/convert/``). Differences that do not change an eval-mode output: weight
normalisation is folded into plain weights (the converter computes g * v / ||v||), and the weight
dropout of the input projections keeps its gradient (the official gradient cut is a bug, not a
design). Parameters the official forward never uses (``compress_hn_layers*`` of its encoder) are not built.

The six rows of the paper's ablation table (Table 3) are config switches (``--set model.KEY=VALUE``):

| row | switches |
|---|---|
| appearance only | ``streams="appearance"``, ``fusion="none"`` (the one stream's H pooled directly) |
| motion only | ``streams="motion"``, ``fusion="none"`` |
| concatenation without fusion | ``fusion="none"`` (U = [H^a; H^m] pooled directly) |
| single-attention fusion | ``fusion="single"`` (P^all only; alpha = 1) |
| dual-attention fusion | ``fusion="dual"`` (P^a and P^m) |
| MASN | the defaults (``streams="both"``, ``fusion="full"``) |

Which attentions the single and dual variants keep is our reading of the ablation's names; the official
code has an ``ablation`` argument that its network never reads, so it gives no guidance.

Published numbers and what they need (docs/reproduce.md, "MASN"): the official setting
(``official=True``) with the released checkpoints; training from scratch follows the paper (Adam 1e-4,
batch 32 / 16, dropout 0.3) and the official loss scale (the hinge averaged over (question, negative)
pairs, ``train.hinge_reduction=mean``, a per-model training default). The official code picked its
reported epochs on the test split; the toolkit selects on validation.

Returned attention weights (for explanations): ``appearance_attention`` / ``motion_attention`` (B, T, M),
the BAN attention of Eq. (5) averaged over glimpses and summed over words (sums to 1 over the valid
objects of the video); ``fusion_weights`` (B, X), alpha of Eq. (9) over the kept attentions in the order
of ``MASN.fusion_names``; ``pool_attention`` (B, R), the weights of the pooling of Eq. (11) over the rows
of U. Multiple choice returns them per candidate with a (B, C) leading shape.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from models.layers import QuestionEncoder, as_embedding_tensor, run_lstm

__all__ = [
    "MASN",
    "AttentionPooling",
    "BilinearAttention",
    "LearnedAdjacencyGraph",
    "MASNConfig",
    "MotionAppearanceFusion",
    "NodeEncoder",
    "ObjectGraph",
    "OfficialQuestionEncoder",
    "StdLayerNorm",
    "masked_softmax",
    "masn",
    "sinusoid",
]

STREAMS = ("both", "appearance", "motion")
FUSIONS = ("full", "dual", "single", "none")
TASK_TYPES = ("open", "mc", "count")
FUSION_ATTENTIONS = {"full": ("appearance", "motion", "all"), "dual": ("appearance", "motion"),
                     "single": ("all",), "none": ()}
BOX_DIM = 6  # [x1/w, y1/h, x2/w, y2/h, bw/w, bh/h]
OFFICIAL_QUESTION_WIDTH = 20  # the official loader pads questions to 20 words (q_max_length)


# --------------------------------------------------------------------------------------------------
# Config
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MASNConfig:
    """MASN hyper-parameters; defaults are the paper's (official code where the paper is silent).

    Attributes:
        num_frames: T, frames per video in the features (20 TGIF-QA; 30 MSVD-QA / MSRVTT-QA).
        appearance_dim: size of ``appearance`` and ``objects`` (2048, ResNet-152).
        motion_dim: size of ``motion`` and ``motion_objects`` (2048, I3D).
        hidden_dim: d (512).
        word_dim: word-vector size (300, GloVe).
        position_dim: width of the box encoding d_s and of the frame encoding d_t (64, official code).
        glimpses: BAN glimpses g (4).
        ban_rank: k of the low-rank bilinear attention (3, official code).
        dropout: the paper's dropout (0.3): input features and question encoder.
        attention_dropout: dropout on the attention maps of Eq. (7), (9) and in the graph / FFN /
            pooling layers (0.1, official code).
        ban_dropout: dropout before the BAN projections (0.2, official code).
        ban_attention_dropout: dropout on the visual side of the BAN attention (0.5, official code).
        freeze_embeddings: keep the GloVe table fixed (official code).
        streams: ``"both"`` (paper), ``"appearance"`` or ``"motion"`` (ablations).
        fusion: ``"full"`` (paper), ``"dual"``, ``"single"`` or ``"none"`` (ablations).
        official: build the official network instead (see the module docstring).
    """

    num_frames: int = 20
    appearance_dim: int = 2048
    motion_dim: int = 2048
    hidden_dim: int = 512
    word_dim: int = 300
    position_dim: int = 64
    glimpses: int = 4
    ban_rank: int = 3
    dropout: float = 0.3
    attention_dropout: float = 0.1
    ban_dropout: float = 0.2
    ban_attention_dropout: float = 0.5
    freeze_embeddings: bool = True
    streams: Literal["both", "appearance", "motion"] = "both"
    fusion: Literal["full", "dual", "single", "none"] = "full"
    official: bool = False

    def __post_init__(self) -> None:
        def bad(name: str, why: str) -> ValueError:
            return ValueError(f"MASNConfig.{name}={getattr(self, name)!r} is invalid: {why}")

        for name in ("num_frames", "appearance_dim", "motion_dim", "hidden_dim", "word_dim", "position_dim",
                     "glimpses", "ban_rank"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise bad(name, "must be an integer >= 1")
        for name in ("hidden_dim", "position_dim"):
            if getattr(self, name) % 2:
                raise bad(name, "must be even (sine and cosine halves / two LSTM directions)")
        for name in ("dropout", "attention_dropout", "ban_dropout", "ban_attention_dropout"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or not 0.0 <= value < 1.0:
                raise bad(name, "must be a number in [0, 1)")
        for name in ("freeze_embeddings", "official"):
            if not isinstance(getattr(self, name), bool):
                raise bad(name, "must be true or false")
        if self.streams not in STREAMS:
            raise bad("streams", f"choose one of {', '.join(map(repr, STREAMS))}")
        if self.fusion not in FUSIONS:
            raise bad("fusion", f"choose one of {', '.join(map(repr, FUSIONS))}")
        if self.streams != "both" and self.fusion != "none":
            raise bad("fusion", "a single stream has nothing to fuse; use fusion='none' with it")
        if self.official and (self.streams != "both" or self.fusion != "full"):
            raise bad("official", "the official network is the full model (streams='both', fusion='full')")


# --------------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------------


def sinusoid(length: int, dim: int, *, device=None, dtype=torch.float32) -> Tensor:
    """Transformer position encoding: (length, dim), sin on even channels, cos on odd ones."""
    pos = torch.arange(length, device=device, dtype=torch.float32)[:, None]  # (T, 1)
    freq = torch.exp(torch.arange(0, dim, 2, device=device, dtype=torch.float32) * (-math.log(10000.0) / dim))
    pe = torch.zeros(length, dim, device=device)
    pe[:, 0::2] = torch.sin(pos * freq)
    pe[:, 1::2] = torch.cos(pos * freq)
    return pe.to(dtype)


def masked_softmax(scores: Tensor, valid: Tensor, dim: int) -> Tensor:
    """Softmax over ``dim`` among ``valid`` entries (bool, broadcastable); all-invalid slices give zeros."""
    scores = scores.float().masked_fill(~valid, float("-inf"))
    p = torch.softmax(scores, dim=dim)
    return p.nan_to_num(0.0)


class StdLayerNorm(nn.Module):
    """The official fusion's normalisation: a * (x - mean) / (unbiased std + eps) + b (official only)."""

    def __init__(self, dim: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.bias = nn.Parameter(torch.zeros(dim))
        self.eps = eps

    def forward(self, x: Tensor) -> Tensor:
        mean = x.mean(-1, keepdim=True)
        return self.weight * (x - mean) / (x.std(-1, keepdim=True) + self.eps) + self.bias


# --------------------------------------------------------------------------------------------------
# Blocks
# --------------------------------------------------------------------------------------------------


class NodeEncoder(nn.Module):
    """Eq. (1)-(2) for one stream: object rows and the frame's global vector -> K = T*M nodes of width d.

    Args:
        in_dim: feature size of the objects and of the global vector.
        dim: d.
        position_dim: width of d_s and d_t.
        dropout: dropout on the input features (paper) or on the projection weights (``weight_dropout``,
            the official DropConnect).

    Forward:
        objects (B, T, M, Din); box_code (B, T, M, P) = d_s; frame_code (B, T, P) = d_t (masked);
        global_feat (B, T, Din).

    Returns:
        (B, T*M, d).
    """

    def __init__(self, in_dim: int, dim: int, *, position_dim: int = 64, dropout: float = 0.0,
                 weight_dropout: bool = False) -> None:
        super().__init__()
        self.compress_local = nn.Linear(in_dim, dim, bias=False)
        self.compress_global = nn.Linear(in_dim, dim, bias=False)
        self.local_proj = nn.Linear(dim + 2 * position_dim, dim)  # Eq. (1)
        self.node_proj = nn.Linear(2 * dim, dim)  # Eq. (2)
        self.p = dropout
        self.weight_dropout = weight_dropout

    def _compress(self, layer: nn.Linear, x: Tensor) -> Tensor:
        if self.weight_dropout:  # official: DropConnect on the weight
            return F.linear(x, F.dropout(layer.weight, self.p, self.training))
        # paper setting: dropout on the projected features (the same regularisation as dropping input
        # channels up to scale, at a quarter of the cost of a mask over the 2048-d inputs)
        return F.dropout(layer(x), self.p, self.training)

    def forward(self, objects: Tensor, box_code: Tensor, frame_code: Tensor, global_feat: Tensor) -> Tensor:
        B, T, M, _ = objects.shape
        d = self.node_proj.out_features
        o = self._compress(self.compress_local, objects)  # (B, T, M, d)
        # Eq. (1) FFN([o; d_s; d_t]) as a sum of column blocks: the frame code d_t is applied per frame
        w_l = self.local_proj.weight
        p = frame_code.shape[-1]
        local = (F.linear(torch.cat([o, box_code], dim=-1), w_l[:, :-p], self.local_proj.bias)
                 + F.linear(frame_code, w_l[:, -p:])[:, :, None])  # (B, T, M, d)
        g = self._compress(self.compress_global, global_feat)  # (B, T, d)
        g = g + sinusoid(T, g.shape[-1], device=g.device, dtype=g.dtype)  # frame position
        # Eq. (2) FFN([v_local; v_global]), the global block once per frame, broadcast over its objects
        w_n = self.node_proj.weight
        v = F.linear(local, w_n[:, :d], self.node_proj.bias) + F.linear(g, w_n[:, d:])[:, :, None]
        return v.reshape(B, T * M, -1)


class ObjectGraph(nn.Module):
    """Eq. (3)-(4): A = softmax((X W1)(X W2)^T); F = LayerNorm(X + ReLU(A ReLU(A X W3) W4)).

    Forward:
        x: (B, K, d); valid: (B, K) bool.

    Returns:
        (F (B, K, d), A (B, K, K)); padded nodes have zero rows and columns in A.
    """

    def __init__(self, dim: int, *, dropout: float = 0.0) -> None:
        super().__init__()
        self.w1 = nn.Linear(dim, dim, bias=False)
        self.w2 = nn.Linear(dim, dim, bias=False)
        self.w3 = nn.Linear(dim, dim, bias=False)
        self.w4 = nn.Linear(dim, dim, bias=False)
        self.norm = nn.LayerNorm(dim, elementwise_affine=False)
        self.dropout = nn.Dropout(dropout)

    def adjacency(self, x: Tensor, valid: Tensor) -> Tensor:
        scores = self.w1(x) @ self.w2(x).transpose(1, 2)  # (B, K, K)  Eq. (3)
        a = masked_softmax(scores, valid[:, None, :], dim=-1) * valid[:, :, None]
        return a.to(x.dtype)

    def forward(self, x: Tensor, valid: Tensor) -> tuple[Tensor, Tensor]:
        a = self.adjacency(x, valid)
        h = self.dropout(F.relu(a @ self.w3(x)))  # (B, K, d)
        h = F.relu(a @ self.w4(h))  # (B, K, d)  Eq. (4)
        return self.norm(x + h), a


class LearnedAdjacencyGraph(nn.Module):
    """The official graph (``official=True``): learned adjacency with a x100 temperature, 3 layers.

    A = softmax(100 * h h^T), h = ReLU(W_e2 ReLU(W_e1 x)); layer i: x <- Dropout(ReLU(LayerNorm(A x W_i)));
    F = LayerNorm(x_0 + x_3).
    """

    def __init__(self, dim: int, *, num_layers: int = 3, temperature: float = 100.0,
                 dropout: float = 0.1) -> None:
        super().__init__()
        self.edge1 = nn.Linear(dim, dim, bias=False)
        self.edge2 = nn.Linear(dim, dim, bias=False)
        self.layers = nn.ModuleList(nn.Linear(dim, dim, bias=False) for _ in range(num_layers))
        self.norm = nn.LayerNorm(dim, elementwise_affine=False)
        self.temperature = temperature
        self.dropout = nn.Dropout(dropout)

    def adjacency(self, x: Tensor, valid: Tensor) -> Tensor:
        h = F.relu(self.edge2(F.relu(self.edge1(x))))  # (B, K, d)
        scores = self.temperature * (h @ h.transpose(1, 2))  # (B, K, K)
        a = masked_softmax(scores, valid[:, None, :], dim=-1) * valid[:, :, None]
        return a.to(x.dtype)

    def forward(self, x: Tensor, valid: Tensor) -> tuple[Tensor, Tensor]:
        a = self.adjacency(x, valid)
        h = x
        for layer in self.layers:
            h = self.dropout(F.relu(self.norm(a @ layer(h))))  # (B, K, d)
        return self.norm(x + h), a


class _ProjReLU(nn.Module):
    """Dropout -> Linear -> ReLU (the BAN's projections)."""

    def __init__(self, in_dim: int, out_dim: int, dropout: float, relu: bool = True) -> None:
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        self.linear = nn.Linear(in_dim, out_dim)
        self.relu = relu

    def forward(self, x: Tensor) -> Tensor:
        y = self.linear(self.dropout(x))
        return F.relu(y) if self.relu else y


class BilinearAttention(nn.Module):
    """Eq. (5): bilinear attention network (Kim et al., 2018) between nodes and words, g glimpses.

    Attention: logits_g[v, q] = sum_k h_g[k] (ReLU(W_v x_v))_k (ReLU(W_q w_q))_k + b_g, with rank-k
    projections of width k*d, softmax over all valid (node, word) pairs of each glimpse. Glimpse g's joint
    feature j_g[k] = sum_{v,q} A_g[v,q] (ReLU(U_v x_v))_k (ReLU(U_q w_q))_k is projected and added to
    every word feature (residual), and the next glimpse reads the updated words. The node projections
    U_v of all glimpses run as one matmul and share one dropout mask on their input (the official code
    draws one mask per glimpse; eval-mode outputs are the same).

    Forward:
        nodes (B, K, d); words (B, L, d); node_valid (B, K); word_valid (B, L).

    Returns:
        (words (B, L, d) = H, attention (B, g, K, L)).
    """

    def __init__(self, dim: int, *, glimpses: int = 4, rank: int = 3, dropout: float = 0.2,
                 attention_dropout: float = 0.5) -> None:
        super().__init__()
        self.glimpses = glimpses
        self.att_v = _ProjReLU(dim, dim * rank, dropout)
        self.att_q = _ProjReLU(dim, dim * rank, dropout)
        self.att_h = nn.Parameter(torch.randn(glimpses, dim * rank) / math.sqrt(dim * rank))  # h_g
        self.att_bias = nn.Parameter(torch.zeros(glimpses))  # b_g
        self.att_dropout = nn.Dropout(attention_dropout)
        self.rank = rank
        self.joint_v = nn.ModuleList(_ProjReLU(dim, dim, dropout) for _ in range(glimpses))
        self.joint_q = nn.ModuleList(_ProjReLU(dim, dim, dropout) for _ in range(glimpses))
        self.word_proj = nn.ModuleList(_ProjReLU(dim, dim, dropout, relu=False) for _ in range(glimpses))

    def attention(self, nodes: Tensor, words: Tensor, node_valid: Tensor, word_valid: Tensor) -> Tensor:
        B, K, L = nodes.shape[0], nodes.shape[1], words.shape[1]
        v = self.att_dropout(self.att_v(nodes))  # (B, K, k*d)
        q = self.att_q(words)  # (B, L, k*d)
        hq = q[:, None] * self.att_h[None, :, None]  # (B, g, L, k*d): h_g folded into the (short) word side
        logits = v[:, None] @ hq.transpose(2, 3)  # (B, g, K, L)
        logits = logits + self.att_bias[None, :, None, None]
        valid = node_valid[:, None, :, None] & word_valid[:, None, None, :]  # (B, 1, K, L)
        att = masked_softmax(logits.view(B, self.glimpses, K * L), valid.view(B, 1, K * L), dim=-1)
        return att.view(B, self.glimpses, K, L).to(nodes.dtype)

    def forward(self, nodes: Tensor, words: Tensor, node_valid: Tensor,
                word_valid: Tensor) -> tuple[Tensor, Tensor]:
        att = self.attention(nodes, words, node_valid, word_valid)  # (B, g, K, L)
        # the node projections of all glimpses in one matmul (they do not depend on the updated words)
        w = torch.cat([p.linear.weight for p in self.joint_v])  # (g*d, d)
        b = torch.cat([p.linear.bias for p in self.joint_v])
        vs = F.relu(F.linear(self.joint_v[0].dropout(nodes), w, b)).chunk(self.glimpses, dim=-1)  # (B, K, d)
        for g in range(self.glimpses):
            v = vs[g]  # (B, K, d)
            q = self.joint_q[g](words)  # (B, L, d)
            joint = ((att[:, g] @ q) * v).sum(dim=1)  # (B, d): sum_{v,q} A[v,q] v_k q_k
            words = words + self.word_proj[g](joint)[:, None]  # (B, L, d)  residual over glimpses
        return words, att


class _Att(nn.Module):
    """Scaled dot-product attention map softmax((Q W_q)(K W_k)^T / sqrt(d)) with dropout (Eq. 7, 9)."""

    def __init__(self, dim: int, dropout: float) -> None:
        super().__init__()
        self.key = nn.Linear(dim, dim)
        self.query = nn.Linear(dim, dim)
        self.dropout = nn.Dropout(dropout)

    def forward(self, keys: Tensor, queries: Tensor, valid: Tensor) -> Tensor:
        scores = self.query(queries) @ self.key(keys).transpose(-2, -1) / math.sqrt(queries.shape[-1])
        return self.dropout(masked_softmax(scores, valid, dim=-1).to(keys.dtype))  # (B, Lq, Lk)


def _ffn(dim: int, dropout: float) -> nn.Sequential:
    return nn.Sequential(nn.Linear(dim, dim), nn.ReLU(), nn.Dropout(dropout), nn.Linear(dim, dim))


class MotionAppearanceFusion(nn.Module):
    """Eq. (6)-(11) up to O: question-guided mix of the appearance, motion and joint attentions of U.

    Args:
        dim: d.
        attentions: which of ``"appearance"``, ``"motion"``, ``"all"`` to use (``fusion`` ablations).
        dropout: dropout on attention maps and in the FFN.
        official: the official LayerNorm variant and row sums of Eq. (9) over padded rows as well.

    Forward:
        u (B, 2L, d) = [H^a; H^m]; q (B, d); valid (B, 2L) bool.

    Returns:
        (O (B, 2L, d), alpha (B, X)).
    """

    def __init__(self, dim: int, attentions: tuple[str, ...], *, dropout: float = 0.1,
                 official: bool = False) -> None:
        super().__init__()
        self.names = tuple(attentions)
        self.att = nn.ModuleDict({n: _Att(dim, dropout) for n in self.names})
        self.value = nn.ModuleDict({n: nn.Linear(dim, dim) for n in self.names})
        norm = (lambda: StdLayerNorm(dim)) if official else (lambda: nn.LayerNorm(dim))
        self.norm = nn.ModuleDict({n: norm() for n in self.names})
        self.guide = _Att(dim, dropout) if len(self.names) > 1 else None  # Eq. (9); one attention: alpha = 1
        self.ffn = _ffn(dim, dropout)
        self.dropout = nn.Dropout(dropout)
        self.out_norm = norm()
        self.official = official

    def _keys(self, name: str, valid: Tensor) -> Tensor:
        half = valid.shape[1] // 2
        side = torch.arange(valid.shape[1], device=valid.device) < half  # appearance rows of U
        keys = {"appearance": side, "motion": ~side, "all": torch.ones_like(side)}[name]
        return valid[:, None, :] & keys[None, None, :] & valid[:, :, None]  # (B, 2L, 2L)

    def forward(self, u: Tensor, q: Tensor, valid: Tensor) -> tuple[Tensor, Tensor]:
        zs = []
        for n in self.names:
            a = self.att[n](u, u, self._keys(n, valid))  # (B, 2L, 2L)  Eq. (7)
            zs.append(self.norm[n](u + a @ self.value[n](u)))  # (B, 2L, d)  Eq. (8)
        z = torch.stack(zs, dim=1)  # (B, X, 2L, d)
        rows = z if self.official else z * valid[:, None, :, None].to(z.dtype)
        summary = rows.sum(dim=2)  # (B, X, d)  Eq. (9): z^x
        always = torch.ones(u.shape[0], 1, len(self.names), dtype=torch.bool, device=u.device)
        if self.guide is None:
            alpha = always[:, 0].to(z.dtype)  # (B, 1)
        else:
            alpha = self.guide(summary, q[:, None], always)[:, 0]  # (B, X)
        s = (alpha[:, :, None, None] * z).sum(dim=1)  # (B, 2L, d)  Eq. (10)
        return self.out_norm(s + self.ffn(self.dropout(s))), alpha  # Eq. (11)


class AttentionPooling(nn.Module):
    """Eq. (11), f: score each row with an MLP, masked softmax over rows, weighted sum, linear.

    Forward:
        x (B, R, d); valid (B, R).

    Returns:
        (f (B, d), weights (B, R)).
    """

    def __init__(self, dim: int, *, dropout: float = 0.1, bias: bool = True,
                 score_bias: bool = False) -> None:
        super().__init__()
        self.score = nn.Sequential(nn.Linear(dim, dim), nn.ReLU(), nn.Dropout(dropout),
                                   nn.Linear(dim, 1, bias=score_bias))  # a score bias cancels in the softmax
        self.merge = nn.Linear(dim, dim, bias=bias)

    def forward(self, x: Tensor, valid: Tensor) -> tuple[Tensor, Tensor]:
        w = masked_softmax(self.score(x)[..., 0], valid, dim=1).to(x.dtype)  # (B, R)
        return self.merge((w[:, :, None] * x).sum(dim=1)), w


class OfficialQuestionEncoder(nn.Module):
    """The official question encoder (``official=True``).

    frozen GloVe -> Dropout -> Linear(300, d) -> ReLU -> BiLSTM(d per direction) -> words:
    Dropout(ReLU(Linear(2d, d))), sentence: Dropout(ReLU(Linear(2d, d))) of [final fwd; final bwd].

    Forward / returns: as :class:`models.layers.QuestionEncoder`.
    """

    def __init__(self, vocab_size: int, *, embed_dim: int = 300, hidden_dim: int = 512, dropout: float = 0.0,
                 embeddings=None) -> None:
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, embed_dim, padding_idx=0)
        if embeddings is not None:
            with torch.no_grad():
                self.embedding.weight.copy_(as_embedding_tensor(embeddings, vocab_size=vocab_size,
                                                                embed_dim=embed_dim))
        self.embedding.weight.requires_grad_(False)
        self.embed_proj = nn.Linear(embed_dim, hidden_dim, bias=False)
        self.lstm = nn.LSTM(hidden_dim, hidden_dim, batch_first=True, bidirectional=True)
        self.word_proj = nn.Linear(2 * hidden_dim, hidden_dim, bias=False)
        self.sentence_proj = nn.Linear(2 * hidden_dim, hidden_dim, bias=False)
        self.dropout = nn.Dropout(dropout)

    def forward(self, tokens: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        B, L = tokens.shape
        lengths = lengths.reshape(B).clamp(min=1, max=L).cpu()
        x = F.relu(self.embed_proj(self.dropout(self.embedding(tokens))))  # (B, L, d)
        packed = nn.utils.rnn.pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
        out, (h_n, _) = run_lstm(self.lstm, packed)  # h_n: (2, B, d); fp32 under CPU autocast
        out, _ = nn.utils.rnn.pad_packed_sequence(out, batch_first=True, total_length=L)  # (B, L, 2d)
        words = self.dropout(F.relu(self.word_proj(out)))  # (B, L, d)
        sentence = self.dropout(F.relu(self.sentence_proj(torch.cat([h_n[0], h_n[1]], dim=-1))))  # (B, d)
        return words, sentence


# --------------------------------------------------------------------------------------------------
# Model
# --------------------------------------------------------------------------------------------------


class MASN(nn.Module):
    """Motion-Appearance Synergistic Network (see the module docstring for the equations).

    Args (keyword-only):
        vocab_size: question vocabulary size (id 0 = padding).
        task_type: ``"open"``, ``"mc"`` or ``"count"``.
        num_answers: answer classes for ``"open"`` (ignored otherwise).
        embeddings: optional (vocab_size, word_dim) GloVe matrix.
        the remaining arguments are the fields of :class:`MASNConfig`.

    Forward:
        batch: dict with the ``masn`` features ``appearance`` (B, T, Da), ``motion`` (B, T, Dm),
            ``objects`` (B, T, M, Da), ``object_boxes`` (B, T, M, 6), ``motion_objects`` (B, T, M, Dm),
            optional ``frame_mask`` (B, T) and ``object_mask`` (B, T, M) bool (all valid when absent),
            ``question`` (B, L) int64, ``question_len`` (B,), and for ``"mc"`` ``candidates``
            (B, C, Lc) and ``candidates_len`` (B, C). The batch is not modified.

    Returns:
        ``{"logits": (B, A)}``, ``{"scores": (B, C)}`` or ``{"count": (B,)}``, plus the attention
        weights ``appearance_attention`` / ``motion_attention`` (B, T, M), ``fusion_weights`` (B, X),
        ``pool_attention`` (B, R) (with a (B, C) leading shape for ``"mc"``; see the module docstring).
    """

    def __init__(
        self, *, vocab_size: int, task_type: str, num_answers: int = 0, num_frames: int = 20,
        appearance_dim: int = 2048, motion_dim: int = 2048, hidden_dim: int = 512, word_dim: int = 300,
        position_dim: int = 64, glimpses: int = 4, ban_rank: int = 3, dropout: float = 0.3,
        attention_dropout: float = 0.1, ban_dropout: float = 0.2, ban_attention_dropout: float = 0.5,
        freeze_embeddings: bool = True, streams: str = "both", fusion: str = "full", official: bool = False,
        embeddings: np.ndarray | Tensor | None = None,
    ) -> None:
        super().__init__()
        if task_type not in TASK_TYPES:
            raise ValueError(f"task_type must be one of {TASK_TYPES}, got {task_type!r}")
        if task_type == "open" and num_answers < 1:
            raise ValueError(f"an open-ended MASN needs num_answers >= 1, got {num_answers}")
        fields = {k: v for k, v in locals().items() if k in MASNConfig.__dataclass_fields__}
        MASNConfig(**fields)  # the config's checks, also for a model built without one
        self.task_type = task_type
        self.num_frames = num_frames
        self.dims = {"appearance": appearance_dim, "motion": motion_dim}
        self.position_dim = position_dim
        self.official = official
        self.stream_names = ("appearance", "motion") if streams == "both" else (streams,)
        self.fusion_names = FUSION_ATTENTIONS[fusion]
        d = hidden_dim
        if official:
            self.question_encoder = OfficialQuestionEncoder(vocab_size, embed_dim=word_dim, hidden_dim=d,
                                                            dropout=dropout, embeddings=embeddings)
        else:
            self.question_encoder = QuestionEncoder(
                vocab_size, embed_dim=word_dim, hidden_dim=d, dropout=dropout, embeddings=embeddings,
                freeze_embeddings=freeze_embeddings)
        self.box_encoding = nn.Linear(BOX_DIM, position_dim)  # d_s, shared by both streams
        self.nodes = nn.ModuleDict({
            s: NodeEncoder(self.dims[s], d, position_dim=position_dim, dropout=dropout,
                           weight_dropout=official)
            for s in self.stream_names
        })
        graph = (lambda: LearnedAdjacencyGraph(d, dropout=attention_dropout)) if official else (
            lambda: ObjectGraph(d, dropout=attention_dropout))
        self.graphs = nn.ModuleDict({s: graph() for s in self.stream_names})
        self.ban = nn.ModuleDict({
            s: BilinearAttention(d, glimpses=glimpses, rank=ban_rank, dropout=ban_dropout,
                                 attention_dropout=ban_attention_dropout)
            for s in self.stream_names
        })
        self.fusion = None
        if self.fusion_names:
            self.fusion = MotionAppearanceFusion(d, self.fusion_names, dropout=attention_dropout,
                                                 official=official)
        # multiple choice: a bias shared by all candidates cancels in the hinge loss (it would never train),
        # so the paper model leaves it out; the official network has it (its released weights hold one)
        bias = task_type != "mc" or official
        self.pool = AttentionPooling(d, dropout=attention_dropout, bias=bias, score_bias=official)
        self.head = nn.Linear(d, num_answers if task_type == "open" else 1, bias=bias)

    # -- inputs ------------------------------------------------------------------------------------

    def _inputs(self, batch: dict) -> dict[str, Tensor]:
        keys = ("appearance", "motion", "objects", "object_boxes", "motion_objects", "question",
                "question_len")
        missing = [k for k in keys if k not in batch]
        if missing:
            raise KeyError(f"MASN needs batch keys {missing} (features of the 'masn' feature set); "
                           f"the batch has {sorted(batch)}")
        dtype = self.box_encoding.weight.dtype
        app, objs = batch["appearance"], batch["objects"]
        B, T = app.shape[:2]
        M = objs.shape[2] if objs.dim() == 4 else -1
        expect = {"appearance": (B, T, self.dims["appearance"]), "motion": (B, T, self.dims["motion"]),
                  "objects": (B, T, M, self.dims["appearance"]), "object_boxes": (B, T, M, BOX_DIM),
                  "motion_objects": (B, T, M, self.dims["motion"])}
        for key, shape in expect.items():
            if tuple(batch[key].shape) != shape or T != self.num_frames:
                raise ValueError(
                    f"MASN expects batch[{key!r}] of shape {shape} with T={self.num_frames} but got "
                    f"{tuple(batch[key].shape)}; set the model config's num_frames / appearance_dim / "
                    f"motion_dim to match the features"
                )
        self._check_question_and_masks(batch, B, T, M)
        out = {k: batch[k].to(dtype) for k in expect}
        frame = batch.get("frame_mask")
        frame = torch.ones(B, T, dtype=torch.bool, device=app.device) if frame is None else frame.bool()
        obj = batch.get("object_mask")
        obj = torch.ones(B, T, M, dtype=torch.bool, device=app.device) if obj is None else obj.bool()
        if self.official:  # the official mask drops the last frame of a video that fills all T frames
            n = frame.sum(dim=1, keepdim=True).clamp(max=T - 1)
            frame = frame & (torch.arange(T, device=app.device)[None] < n)
        out["frame_valid"] = frame
        out["node_valid"] = (frame[:, :, None] & obj).reshape(B, T * M)
        return out

    @staticmethod
    def _check_question_and_masks(batch: dict, B: int, T: int, M: int) -> None:
        """The question (B, L) with one length per video, and the optional masks, match the features."""
        q, q_len = batch["question"], batch["question_len"]
        if q.dim() != 2 or q.shape[0] != B or q_len.numel() != B:
            raise ValueError(f"MASN expects batch['question'] (B, L) and batch['question_len'] (B,) with "
                             f"B={B} but got {tuple(q.shape)} and {tuple(q_len.shape)}")
        for key, shape in (("frame_mask", (B, T)), ("object_mask", (B, T, M))):
            if batch.get(key) is not None and tuple(batch[key].shape) != shape:
                raise ValueError(f"MASN expects batch[{key!r}] of shape {shape} but got "
                                 f"{tuple(batch[key].shape)}")

    def _question(self, tokens: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Encode words; (B, L) -> words (B, L', d), q (B, d), valid (B, L') with L' = longest length."""
        lengths = lengths.reshape(-1).clamp(min=1, max=tokens.shape[1])
        if self.official:  # the official loader keeps the first 20 words
            lengths = lengths.clamp(max=OFFICIAL_QUESTION_WIDTH)
        tokens = tokens[:, : int(lengths.max())]  # the official encoder pads to the longest question
        words, q = self.question_encoder(tokens, lengths)
        L = tokens.shape[1]
        n = lengths.to(words.device)[:, None]
        if self.official:  # the official mask drops the last word of a question filling its 20-word width
            n = n.clamp(max=OFFICIAL_QUESTION_WIDTH - 1)
        return words, q, torch.arange(L, device=words.device)[None] < n

    # -- forward -----------------------------------------------------------------------------------

    def _visual(self, x: dict[str, Tensor]) -> dict[str, Tensor]:
        """Eq. (1)-(4) for each stream: {stream: F (B, K, d)}."""
        T = x["appearance"].shape[1]
        box_code = self.box_encoding(x["object_boxes"])  # (B, T, M, P)  d_s
        d_t = sinusoid(T, self.position_dim, device=box_code.device, dtype=box_code.dtype)  # (T, P)
        frame_code = d_t[None] * x["frame_valid"][:, :, None].to(box_code.dtype)  # (B, T, P)
        local = {"appearance": x["objects"], "motion": x["motion_objects"]}
        out = {}
        for s in self.stream_names:
            v = self.nodes[s](local[s], box_code, frame_code, x[s])  # (B, K, d)  Eq. (1)-(2)
            out[s], _ = self.graphs[s](v, x["node_valid"])  # (B, K, d)  Eq. (3)-(4)
        return out

    def _answer(self, graphs: dict[str, Tensor], node_valid: Tensor, words: Tensor, q: Tensor,
                word_valid: Tensor, T: int) -> dict[str, Tensor]:
        B = words.shape[0]
        hs, out = [], {}
        for s in self.stream_names:
            h, att = self.ban[s](graphs[s], words, node_valid, word_valid)  # (B, L, d)  Eq. (5)
            hs.append(h)
            out[f"{s}_attention"] = att.mean(dim=1).sum(dim=-1).view(B, T, -1)  # (B, T, M)
        u = torch.cat(hs, dim=1)  # (B, 2L, d)  Eq. (6)
        valid = torch.cat([word_valid] * len(hs), dim=1)  # (B, 2L)
        if self.fusion is not None:
            u, out["fusion_weights"] = self.fusion(u, q, valid)  # Eq. (7)-(11)
        f, out["pool_attention"] = self.pool(u, valid)  # (B, d)
        out["head"] = self.head(f)  # (B, A) or (B, 1)
        return out

    def forward(self, batch: dict) -> dict[str, Tensor]:
        x = self._inputs(batch)
        T = x["appearance"].shape[1]
        graphs = self._visual(x)
        if self.task_type == "mc":
            return self._score_candidates(batch, graphs, x["node_valid"], T)
        words, q, word_valid = self._question(batch["question"], batch["question_len"])
        out = self._answer(graphs, x["node_valid"], words, q, word_valid, T)
        head = out.pop("head")
        key, value = ("logits", head) if self.task_type == "open" else ("count", head[:, 0])
        return {key: value, **out}

    def _score_candidates(self, batch: dict, graphs: dict[str, Tensor], node_valid: Tensor,
                          T: int) -> dict[str, Tensor]:
        if "candidates" not in batch or "candidates_len" not in batch:
            raise KeyError("a multiple-choice MASN needs batch['candidates'] (B, C, Lc) and "
                           "batch['candidates_len'] (B, C)")
        cands, cand_len = batch["candidates"], batch["candidates_len"]
        if cands.dim() != 3 or cands.shape[0] != node_valid.shape[0] or cand_len.shape != cands.shape[:2]:
            raise ValueError(f"MASN expects batch['candidates'] (B, C, Lc) and batch['candidates_len'] "
                             f"(B, C) with B={node_valid.shape[0]} but got {tuple(cands.shape)} and "
                             f"{tuple(cand_len.shape)}")
        B, C, _ = cands.shape
        tokens, lengths = join_question_and_candidates(batch["question"], batch["question_len"],
                                                       batch["candidates"], batch["candidates_len"])
        if self.official:  # candidate by candidate: the official row sums see each run's own padding
            tokens, lengths = tokens.view(B, C, -1), lengths.view(B, C)
            runs = [self._answer(graphs, node_valid, *self._question(tokens[:, c], lengths[:, c]), T)
                    for c in range(C)]
            pooled = max(r["pool_attention"].shape[1] for r in runs)
            for r in runs:
                r["pool_attention"] = F.pad(r["pool_attention"], (0, pooled - r["pool_attention"].shape[1]))
            out = {k: torch.stack([r[k] for r in runs], dim=1) for k in runs[0]}  # (B, C, ...)
        else:
            words, q, word_valid = self._question(tokens, lengths)  # (B*C, L, d)
            rep = {s: g.repeat_interleave(C, dim=0) for s, g in graphs.items()}  # video once per candidate
            out = self._answer(rep, node_valid.repeat_interleave(C, dim=0), words, q, word_valid, T)
            out = {k: v.reshape(B, C, *v.shape[1:]) for k, v in out.items()}
        return {"scores": out.pop("head")[..., 0], **out}


def join_question_and_candidates(question: Tensor, question_len: Tensor, candidates: Tensor,
                                 candidates_len: Tensor) -> tuple[Tensor, Tensor]:
    """Question followed by each candidate as one word sequence.

    Args:
        question (B, L), question_len (B,), candidates (B, C, Lc), candidates_len (B, C).

    Returns:
        tokens (B*C, L + Lc) 0-padded and lengths (B*C,).
    """
    B, C, Lc = candidates.shape
    L = question.shape[1]
    ql = question_len.reshape(B, 1).clamp(min=0, max=L)  # (B, 1)
    cl = candidates_len.clamp(min=0, max=Lc)  # (B, C)
    pos = torch.arange(L + Lc, device=question.device)[None, None]  # (1, 1, L+Lc)
    from_q = pos < ql[..., None]  # (B, 1, L+Lc)
    q_tok = question.gather(1, pos[0].clamp(max=L - 1).expand(B, -1))[:, None]  # (B, 1, L+Lc)
    c_idx = (pos - ql[..., None]).clamp(min=0, max=Lc - 1).expand(B, C, -1)  # (B, C, L+Lc)
    c_tok = candidates.gather(2, c_idx)
    in_c = ~from_q & (pos < (ql + cl)[..., None])
    tokens = torch.where(from_q, q_tok, torch.where(in_c, c_tok, torch.zeros_like(c_tok)))
    return tokens.reshape(B * C, L + Lc), (ql + cl).reshape(B * C)


# --------------------------------------------------------------------------------------------------
# Builder
# --------------------------------------------------------------------------------------------------


def masn(
    cfg: MASNConfig,
    *,
    vocab_size: int,
    num_answers: int,
    task_type: str,
    embeddings: np.ndarray | Tensor | None = None,
) -> MASN:
    """Build MASN from its config (the registry's ``build``).

    Args:
        cfg: a :class:`MASNConfig`.
        vocab_size: question vocabulary size.
        num_answers: answer classes (open-ended; ignored for mc / count).
        task_type: ``"open"``, ``"mc"`` or ``"count"``.
        embeddings: optional (vocab_size, cfg.word_dim) GloVe matrix.

    Returns:
        An untrained :class:`MASN`; released official weights load through ``vqa-convert masn``.
    """
    if not isinstance(cfg, MASNConfig):
        raise TypeError(f"masn() needs a MASNConfig, got {type(cfg).__name__}")
    return MASN(
        vocab_size=vocab_size, task_type=task_type, num_answers=num_answers, embeddings=embeddings,
        **{f: getattr(cfg, f) for f in cfg.__dataclass_fields__},
    )
