"""CMIN: Cross-Modal Interaction Networks for query-based moment retrieval.

Zhang, Lin, Zhao, Xiao, "Cross-Modal Interaction Networks for Query-Based Moment Retrieval in Videos",
SIGIR 2019. Official code: https://github.com/ikuinen/CMIN_moment_retrieval (read for reference;
nothing copied).

What this file computes (T time steps, L query words, K window widths, d model size)::

    query   w_1..w_L (GloVe)  -> BiGRU                    h_i in R^d
    Eq. (1)  syntactic GCN, l layers over the dependency edges, residual:
             g_i = ReLU( W_self h_i + b_self
                         + sum_{j: j -> i is an edge}  W_dir(j,i) h_j + b_lab(j,i) )
             o_i = g_i + h_i
             dir is "along the edge" (head -> dependent) or "against it" (dependent -> head); every
             (direction, label) pair has its own bias.
    video    v_1..v_T (PCA-reduced clip features, resampled to T steps: train.moments)
    Eq. (2)  multi-head self-attention with residual: V^S = MultiHead(V, V, V) + V, n layers
    Eq. (3)  BiGRU over V^S                               h^v_t in R^d
    Eq. (4)  attentive aggregation of the words for each step:
             m_ti = w^T tanh(W_1 h^v_t + W_2 o_i + b),  a_t = softmax_i(m_t),  s_t = sum_i a_ti o_i
    Eq. (5)  cross gate: h~^v_t = h^v_t * sigma(W_s s_t),  s~_t = s_t * sigma(W_v h^v_t)
    Eq. (6)  fusion: f_t = [h~^v_t; s~_t] (concat, the official run's default) or the slides' low-rank
             bilinear P( ReLU(U h~^v_t * V s~_t) ); then a BiGRU over f_1..f_T gives the step
             features h^f_t (the next interaction stage's video input)
    Eq. (7)  localisation: at every step t and width w_k, the window centred on t with width w_k gets a
             confidence c_tk = sigma(w_c^T h^f_t) and offsets (d^s_tk, d^e_tk) = W_o h^f_t
    Eq. (8)  loss = alignment BCE(c_tk, y_tk) over the windows + lambda * regression (moment_losses.py)

Readings of the paper, and where the official code differs (the CMIN paper we have is a slide deck:
unnumbered equations, few hyper-parameters; the equation numbers above are ours):

- Input: the paper's PCA-500 of C3D clip features on T = 200 resampled steps. The PCA, the resampling and
  clip centring (``moment.center_clips``: ours, off by default) are data preparation, not the network:
  the ``moment:`` settings (``train.moments.MomentConfig``); the network only reads ``video_dim``.
- Order of the query encoder: the paper runs the BiGRU first and the GCN on its outputs (followed
  here); the official code runs the GCN on the word vectors and the BiGRU after it.
- Syntactic GCN: the official code also gates every message per dimension after its projection,
  ``(W h_j + b) * sigma(G (W h_j) + c_label)`` (``gcn_edge_gates=True`` computes exactly that: checked
  against the official module on random inputs; off by default as the paper's equation has no gate) and
  uses about 40 dependency labels (``num_dep_labels``). The self-loop has its own weight and bias.
- Self-attention: the official code restricts each step to a local window of +-3 steps
  (``attn_window=3``, followed); the paper does not state a window. Padded steps are never attended.
- Interaction: the slides stack aggregation, cross gate and bilinear fusion; the official run uses one
  stage and concatenates the gated features (its bilinear module is commented out). Defaults: the
  official run's (one stage, ``fusion="concat"``), which produced the published numbers;
  ``fusion="bilinear"`` is the slides' variant, low-rank P(U x * V y) as the official (unused) module,
  since a full d x d x d tensor is 134M weights (on the small demo data it stayed at the prior).
- Windows: official widths (ActivityNet [16, 32, 64, 96, 128, 160, 192] steps, TACoS [6, 18, 32]) on
  T = 200 resampled steps. A window centred on step t with width w covers [t + 1/2 - w/2, t + 1/2 + w/2)
  in continuous step units, which is the official inclusive proposal [t - (w-1)/2, t + (w-1)/2]; windows
  reaching outside the video's valid steps are masked out of the loss and the predictions (official).
  The labels are the windows' IoU. ``official_boxes=True`` (default) follows two quirks of the official
  code: the offsets refine ``anchors``, its proposals cast to int32 before the offsets are added
  (truncating the half-step bounds of even widths toward zero: a valid window's anchor is
  [t - w/2, t + w/2) here, half a step left of the window), and a window is valid when its inclusive
  proposal starts at or after 0 and ends before T (an even width may end half a step past the video).
  False: the offsets refine the windows themselves, valid inside [0, T] (checkpoints from before).
- Loss (``moment_losses.moment_loss``, settings ``moment.*``): the slides train each window's confidence
  with BCE against its IoU with the ground truth and the offsets with a regression loss. The official
  code, followed by default: labels IoU / max IoU, zeroed below 0.3 * max (``label_min_ratio``); the BCE
  averaged over every window of the batch, invalid ones counting 0 (``align_norm=all``; ``valid`` averages
  over valid windows only, about 2x on ActivityNet); SmoothL1 of the best-labelled window's refined box,
  weight 1e-3 (``reg_weight``); the ground truth in whole steps, from the step the start falls in to the
  one the end falls in (``gt_rule=official``; ``continuous`` uses the moment as it is).
- Evaluation: the published R@1 are the official code's protocol (``train.moment_iou=official``, the
  default): the arg-max window after regression, no NMS, on its inclusive-step IoU, thresholds 0.1-0.9.
  The paper's R@5 are not computed by the official code; ours rank the top 5 after NMS at IoU m - 0.05
  (its unused ``compute_IoU_recall``), which the paper's R@5 most likely follow (unverified).
- Published numbers (ActivityNet Captions R@1 IoU 0.3/0.5/0.7 = 63.61/43.40/23.88, R@5 = 80.54/67.95/
  50.73; TACoS R@1 IoU 0.1/0.3/0.5 = 32.48/24.64/18.05, R@5 = 62.13/38.46/27.02) need every default:
  C3D clip features, ``moment.*`` (PCA-500, 200 steps resampled ``always``, the official loss), this
  config (TACoS widths from ``train.config.paper_model_defaults``), the official run scripts' training
  (``paper_train_defaults``: AdamW, warm-up + inverse square root, no gradient clipping, fp32) and
  ``train.moment_iou=official``; R@1 is then the official computation, R@5 the convention above. The
  official data files carry Stanford CoreNLP parses (read when present); spaCy or the chain otherwise.

Outputs (``forward`` returns a dict; B batch, T steps, K widths, N = T * K windows, step-major)::

    window_scores   (B, N)     confidence logits of every window (sigmoid gives c_tk); -inf-free,
                               invalid windows are flagged by window_mask, not by their value
    window_offsets  (B, N, 2)  start/end offsets in steps
    window_mask     (B, N)     True where the window lies inside the video's valid steps
    windows         (N, 2)     window [start, end) in steps (the same for every video)
    anchors         (N, 2)     the boxes the offsets refine, [start, end) in steps (``official_boxes``)
    step_scores     (B, T)     evaluation mode only: per-time-step relevance, the best confidence logit
                               of the valid windows covering each step (padded steps -inf); for
                               explaining predictions (:func:`step_relevance`)
    word_attention  (B, T, L)  the last stage's attention of each step over the words
    num_steps       (B,)       valid steps of each video (seconds = steps / num_steps * duration)

Ablations (config switches, the paper's study): ``use_gcn=False`` (no syntactic GCN),
``use_self_attention=False``, ``num_interactions`` (stages), ``use_aggregation=False`` (mean of the
words instead of the attention), ``use_cross_gate=False``, ``fusion="bilinear"`` (the slides' fusion;
the default ``concat`` is the official run's).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from models.layers import as_embedding_tensor

__all__ = [
    "ACTIVITYNET_WIDTHS", "CMIN", "CMINConfig", "TACOS_WIDTHS", "cmin", "integer_anchors", "step_relevance",
    "valid_windows", "window_layout",
]

ACTIVITYNET_WIDTHS = (16, 32, 64, 96, 128, 160, 192)
TACOS_WIDTHS = (6, 18, 32)
FUSIONS = ("concat", "bilinear")
TASK_TYPES = ("moment",)


# --------------------------------------------------------------------------------------------------
# Config
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CMINConfig:
    """CMIN hyper-parameters: the official run scripts' values (ActivityNet Captions unless noted).

    Attributes:
        video_dim: size of the clip features the network reads (500: the paper's PCA-500). ``vqa-train``
            fills it from its data settings: ``moment.pca_dim``, or the features' own size without PCA.
        d_model: d (512).
        word_dim: word-vector size (300, GloVe).
        freeze_embeddings: keep the word vectors fixed (official: fixed word2vec lookup).
        num_heads: self-attention heads (4, run scripts).
        num_attn_layers: self-attention layers (2).
        attn_window: each step attends to +- this many steps (3, official); None = all steps.
        num_gcn_layers: l (2).
        num_dep_labels: dependency label ids (40, official; id 0 = unknown label).
        gcn_edge_gates: the official code's edge gates (``modules_/graph_convolution.py``): each message
            (W h_j + b) is multiplied per dimension by sigma(G (W h_j) + g_label); not in the paper's
            equation (off).
        num_interactions: interaction stages (1, official).
        window_widths: K window widths in steps (ActivityNet's; TACoS (6, 18, 32)).
        dropout: 0.2 (run scripts).
        use_gcn: ablation switch: run the syntactic GCN over the query (False: BiGRU words only).
        use_self_attention: ablation switch: the video self-attention layers (False: skip them).
        use_aggregation: ablation switch: attentive word aggregation per step (False: mean of the words).
        use_cross_gate: ablation switch: the cross gate between the modalities (False: no gating).
        fusion: concat (the official run's: the gated features concatenated, its bilinear module commented
            out) or bilinear (the slides' bilinear fusion, low-rank).
        official_boxes: the official code's box conventions: the offsets refine its int32-cast proposals
            and a window is valid when its inclusive proposal lies in [0, T); False: the offsets refine the
            windows themselves, valid inside [0, T] (checkpoints from before).
    """

    video_dim: int = 500
    d_model: int = 512
    word_dim: int = 300
    freeze_embeddings: bool = True
    num_heads: int = 4
    num_attn_layers: int = 2
    attn_window: int | None = 3
    num_gcn_layers: int = 2
    num_dep_labels: int = 40
    gcn_edge_gates: bool = False
    num_interactions: int = 1
    window_widths: tuple[int, ...] = ACTIVITYNET_WIDTHS
    dropout: float = 0.2
    use_gcn: bool = True
    use_self_attention: bool = True
    use_aggregation: bool = True
    use_cross_gate: bool = True
    fusion: Literal["bilinear", "concat"] = "concat"
    official_boxes: bool = True

    def __post_init__(self) -> None:
        def bad(name: str, why: str) -> ValueError:
            return ValueError(f"CMINConfig.{name}={getattr(self, name)!r} is invalid: {why}")

        def integer(value) -> bool:
            return isinstance(value, int) and not isinstance(value, bool)

        for name in ("video_dim", "d_model", "word_dim", "num_heads", "num_dep_labels", "num_interactions"):
            if not integer(getattr(self, name)) or getattr(self, name) < 1:
                raise bad(name, "must be an integer >= 1")
        for name in ("num_attn_layers", "num_gcn_layers"):
            if not integer(getattr(self, name)) or getattr(self, name) < 0:
                raise bad(name, "must be an integer >= 0")
        if self.attn_window is not None and (not integer(self.attn_window) or self.attn_window < 0):
            raise bad("attn_window", "must be an integer >= 0 or null")
        if self.d_model % 2:
            raise bad("d_model", "must be even (two GRU directions)")
        if self.use_self_attention and self.num_attn_layers and self.video_dim % self.num_heads:
            raise bad("num_heads", f"must divide the video size {self.video_dim} (video_dim)")
        if not self.window_widths or any(not integer(w) or w < 1 for w in self.window_widths):
            raise bad("window_widths", "must be a non-empty list of integer widths >= 1 (steps)")
        for name in ("freeze_embeddings", "gcn_edge_gates", "use_gcn", "use_self_attention",
                     "use_aggregation", "use_cross_gate", "official_boxes"):
            if not isinstance(getattr(self, name), bool):
                raise bad(name, "must be true or false")
        if self.fusion not in FUSIONS:
            raise bad("fusion", "choose bilinear or concat")
        if isinstance(self.dropout, bool) or not isinstance(self.dropout, int | float):
            raise bad("dropout", "must be a number in [0, 1)")
        if not 0.0 <= self.dropout < 1.0:
            raise bad("dropout", "must be in [0, 1)")


# --------------------------------------------------------------------------------------------------
# Windows (pure functions of T and the widths)
# --------------------------------------------------------------------------------------------------


def window_layout(num_steps: int, widths: tuple[int, ...]) -> Tensor:
    """Candidate windows, step-major: window ``t * K + k`` is centred on step t with width ``widths[k]``.

    Returns:
        (T * K, 2) float32 [start, end) in continuous step units (may reach outside [0, T]).
    """
    centre = torch.arange(num_steps, dtype=torch.float32).view(-1, 1) + 0.5  # (T, 1)
    half = torch.tensor(widths, dtype=torch.float32).view(1, -1) / 2  # (1, K)
    return torch.stack([centre - half, centre + half], dim=-1).view(-1, 2)  # (T*K, 2)


def valid_windows(windows: Tensor, lengths: Tensor, *, official: bool = True) -> Tensor:
    """Which windows each video's valid steps hold.

    Args:
        windows: (N, 2) [start, end) in steps; lengths: (B,) valid steps.
        official: the official rule (the inclusive proposal ``[start, end - 1]`` starts at or after 0 and
            ends before the length: an even width may end half a step past the video); else the window
            lies inside ``[0, length]``.

    Returns:
        (B, N) bool.
    """
    last = windows[:, 1] - (1.0 if official else 0.5)  # ends are multiples of 1/2
    return (windows[:, 0] >= 0).unsqueeze(0) & (last.unsqueeze(0) < lengths.unsqueeze(1))


def integer_anchors(windows: Tensor) -> Tensor:
    """The official code's anchors: its inclusive proposals ``[s, e - 1]`` cast to int32 (toward zero).

    Args:
        windows: (N, 2) [start, end) in steps (:func:`window_layout`).

    Returns:
        (N, 2) [start, end) in steps: ``[trunc(s), trunc(e - 1) + 1]``.
    """
    inclusive = torch.trunc(windows - torch.tensor([0.0, 1.0], device=windows.device))
    return inclusive + torch.tensor([0.0, 1.0], device=windows.device)


def step_relevance(window_scores: Tensor, windows: Tensor, window_mask: Tensor, step_mask: Tensor) -> Tensor:
    """Per-step relevance: the best confidence logit among the valid windows that cover each step.

    Args:
        window_scores: (B, N); windows: (N, 2) steps; window_mask: (B, N); step_mask: (B, T).

    Returns:
        (B, T) float; -inf at padded steps and at steps no valid window covers.
    """
    T = step_mask.shape[1]
    centre = torch.arange(T, device=windows.device, dtype=torch.float32) + 0.5
    cover = (windows[:, :1] <= centre) & (centre < windows[:, 1:])  # (N, T)
    allowed = cover.unsqueeze(0) & window_mask.unsqueeze(2)  # (B, N, T)
    best = window_scores.float().unsqueeze(2).masked_fill(~allowed, float("-inf")).amax(1)  # (B, T)
    return best.masked_fill(~step_mask, float("-inf"))


# --------------------------------------------------------------------------------------------------
# Blocks
# --------------------------------------------------------------------------------------------------


class SyntacticGCN(nn.Module):
    """One syntactic graph-convolution layer (Eq. 1) with direction weights and label biases.

    Without edge gates (the paper's equation) a word receives ``W_self h_i + b_self`` and, over its edges,
    ``W_dir h_j + b_lab``. With ``edge_gates`` (the official ``modules_/graph_convolution.py``) every such
    message is gated per dimension after its projection: ``(W h_j + b) * sigma(G (W h_j) + c)``, with a gate
    matrix G per direction (self, along, against) and a gate bias c per (direction, label) (self: one).

    Forward:
        h: (B, L, D) word features; edges: (B, L, L) int64, ``edges[b, i, j] = label + 1`` when token i is
        the head of token j (0 = no edge); mask: (B, L) bool.

    Returns:
        (B, L, D): ReLU(self + along + against), zero at padded words (the residual is the caller's).
    """

    def __init__(self, dim: int, *, num_labels: int, edge_gates: bool = False) -> None:
        super().__init__()
        self.num_labels = num_labels
        self.w_self = nn.Linear(dim, dim)
        self.w_dir = nn.ModuleList([nn.Linear(dim, dim, bias=False) for _ in range(2)])  # along, against
        self.b_lab = nn.Parameter(torch.zeros(2, num_labels, dim))  # (direction, label, D)
        self.edge_gates = edge_gates
        if edge_gates:
            self.g_self = nn.Linear(dim, dim)  # G_self, c_self
            nn.init.zeros_(self.g_self.bias)  # the official gate biases start at 0
            self.g_dir = nn.ModuleList([nn.Linear(dim, dim, bias=False) for _ in range(2)])
            self.g_lab = nn.Parameter(torch.zeros(2, num_labels, dim))  # (direction, label, D)

    def forward(self, h: Tensor, edges: Tensor, mask: Tensor) -> Tensor:
        labels = (edges - 1).clamp(min=0, max=self.num_labels - 1)  # (B, L, L)
        present = edges > 0  # (B, L, L), [b, head, dep]
        # direction 0: a dependent receives from its head; direction 1: a head receives from its dependents
        directions = ((present.transpose(1, 2), labels.transpose(1, 2)), (present, labels))  # [b, recv, send]
        if self.edge_gates:
            out = self._gated(h, directions)
        else:
            out = self.w_self(h)  # (B, L, D)
            for d, (adj, lab) in enumerate(directions):
                a = adj.to(h.dtype)  # (B, L_recv, L_send)
                onehot = F.one_hot(lab, self.num_labels).to(h.dtype) * a.unsqueeze(-1)  # (B, L, L, NL)
                out = out + a @ self.w_dir[d](h) + onehot.sum(2) @ self.b_lab[d]  # (B, L, D)
        return F.relu(out) * mask.unsqueeze(-1).to(h.dtype)

    def _gated(self, h: Tensor, directions: tuple[tuple[Tensor, Tensor], ...]) -> Tensor:
        """The official gated sum of messages, label by label (only the labels present are computed)."""
        proj = F.linear(h, self.w_self.weight)  # (B, L, D) W_self h
        out = (proj + self.w_self.bias) * torch.sigmoid(self.g_self(proj))
        for d, (adj, lab) in enumerate(directions):
            proj = self.w_dir[d](h)  # (B, L_send, D)
            gate = self.g_dir[d](proj)  # (B, L_send, D) G (W h_j)
            for r in torch.unique(lab[adj]).tolist():
                a = (adj & (lab == r)).to(h.dtype)  # (B, L_recv, L_send) edges of label r
                out = out + a @ ((proj + self.b_lab[d, r]) * torch.sigmoid(gate + self.g_lab[d, r]))
        return out


class SelfAttention(nn.Module):
    """Multi-head self-attention over the steps (Eq. 2 without the residual).

    Forward: x (B, T, D), attn_mask (B, 1, T, T) bool (True = may attend). Returns (B, T, D).
    """

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.out = nn.Linear(dim, dim)

    def forward(self, x: Tensor, attn_mask: Tensor) -> Tensor:
        B, T, D = x.shape
        q, k, v = self.qkv(x).view(B, T, 3, self.num_heads, D // self.num_heads).permute(2, 0, 3, 1, 4)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)  # (B, H, T, D/H)
        return self.out(y.transpose(1, 2).reshape(B, T, D))


class BiGRU(nn.Module):
    """Bidirectional GRU that ignores padded steps (packed when lengths differ).

    (B, T, Din) -> (B, T, Dout).
    """

    def __init__(self, in_dim: int, out_dim: int) -> None:
        super().__init__()
        self.gru = nn.GRU(in_dim, out_dim // 2, batch_first=True, bidirectional=True)

    def forward(self, x: Tensor, lengths: Tensor) -> Tensor:
        B, T, _ = x.shape
        if bool((lengths == T).all()):
            return self.gru(x)[0]
        packed = nn.utils.rnn.pack_padded_sequence(x, lengths.clamp(min=1).cpu(), batch_first=True,
                                                   enforce_sorted=False)
        out, _ = self.gru(packed)
        return nn.utils.rnn.pad_packed_sequence(out, batch_first=True, total_length=T)[0]


class WordAggregation(nn.Module):
    """Attentive aggregation of the words for each step (Eq. 4).

    Forward: video (B, T, D), words (B, L, D), word_mask (B, L) bool. Returns ``(s, a)``: (B, T, D) and
    the attention (B, T, L).
    """

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.w_v = nn.Linear(dim, dim)
        self.w_s = nn.Linear(dim, dim, bias=False)
        self.w = nn.Linear(dim, 1, bias=False)

    def forward(self, video: Tensor, words: Tensor, word_mask: Tensor) -> tuple[Tensor, Tensor]:
        scores = self.w(torch.tanh(self.w_v(video).unsqueeze(2) + self.w_s(words).unsqueeze(1))).squeeze(-1)
        scores = scores.masked_fill(~word_mask.unsqueeze(1), float("-inf"))  # (B, T, L)
        attn = torch.softmax(scores, dim=-1)
        return attn @ words, attn  # (B, T, D), (B, T, L)


class CrossGate(nn.Module):
    """Cross gate (Eq. 5): each modality gated by a sigmoid of the other. (B, T, D) x 2 -> (B, T, D) x 2."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.from_words = nn.Linear(dim, dim, bias=False)
        self.from_video = nn.Linear(dim, dim, bias=False)

    def forward(self, video: Tensor, words: Tensor) -> tuple[Tensor, Tensor]:
        return video * torch.sigmoid(self.from_words(words)), words * torch.sigmoid(self.from_video(video))


class InteractionStage(nn.Module):
    """One cross-modal interaction stage (Eq. 4-6): aggregation, cross gate, fusion, BiGRU."""

    def __init__(self, dim: int, *, aggregation: bool, cross_gate: bool, fusion: str, dropout: float) -> None:
        super().__init__()
        self.aggregation = WordAggregation(dim) if aggregation else None
        self.gate = CrossGate(dim) if cross_gate else None
        self.fusion = fusion
        if fusion == "bilinear":
            self.u, self.v, self.p = nn.Linear(dim, dim), nn.Linear(dim, dim), nn.Linear(dim, dim)
        self.rnn = BiGRU(dim if fusion == "bilinear" else 2 * dim, dim)
        self.dropout = nn.Dropout(dropout)

    def forward(self, video: Tensor, words: Tensor, word_mask: Tensor, lengths: Tensor, step_mask: Tensor
                ) -> tuple[Tensor, Tensor]:
        if self.aggregation is not None:
            s, attn = self.aggregation(video, words, word_mask)  # (B, T, D), (B, T, L)
        else:
            w = word_mask.to(words.dtype)
            mean = (words * w.unsqueeze(-1)).sum(1) / w.sum(1, keepdim=True).clamp(min=1)  # (B, D)
            s = mean.unsqueeze(1).expand_as(video)
            attn = (w / w.sum(1, keepdim=True).clamp(min=1)).unsqueeze(1).expand(-1, video.shape[1], -1)
        if self.gate is not None:
            video, s = self.gate(video, s)
        if self.fusion == "bilinear":
            f = self.p(F.relu(self.u(video) * self.v(s)))  # (B, T, D)
        else:
            f = torch.cat([video, s], dim=-1)  # (B, T, 2D)
        f = f * step_mask.unsqueeze(-1).to(f.dtype)
        return self.dropout(self.rnn(f, lengths)), attn  # (B, T, D)


# --------------------------------------------------------------------------------------------------
# Model
# --------------------------------------------------------------------------------------------------


class CMIN(nn.Module):
    """Cross-Modal Interaction Network (see the module docstring for the equations and outputs).

    Args (keyword-only):
        vocab_size: query vocabulary size (id 0 = padding).
        task_type: ``"moment"`` (the only task CMIN has).
        embeddings: optional (vocab_size, word_dim) word vectors (GloVe) to initialise the embedding.
        the remaining arguments are the fields of :class:`CMINConfig` (validated by it).

    Forward:
        batch: dict with ``question`` (B, L) int64, ``question_len`` (B,), ``edges`` (B, L', L') int64 with
            L' >= L (the dependency edges, ``train.moments.encode_edges``), ``clips`` (B, T, video_dim) float
            and optional ``clips_mask`` (B, T) bool (all valid when absent). The batch is not modified.

    Returns:
        The dict described in the module docstring ("Outputs").
    """

    def __init__(
        self,
        *,
        vocab_size: int,
        task_type: str = "moment",
        video_dim: int = 500,
        d_model: int = 512,
        word_dim: int = 300,
        freeze_embeddings: bool = True,
        num_heads: int = 4,
        num_attn_layers: int = 2,
        attn_window: int | None = 3,
        num_gcn_layers: int = 2,
        num_dep_labels: int = 40,
        gcn_edge_gates: bool = False,
        num_interactions: int = 1,
        window_widths: tuple[int, ...] = ACTIVITYNET_WIDTHS,
        dropout: float = 0.2,
        use_gcn: bool = True,
        use_self_attention: bool = True,
        use_aggregation: bool = True,
        use_cross_gate: bool = True,
        fusion: str = "concat",
        official_boxes: bool = True,
        embeddings: np.ndarray | Tensor | None = None,
    ) -> None:
        super().__init__()
        if task_type not in TASK_TYPES:
            raise ValueError(f"CMIN retrieves moments; task type {task_type!r} is not supported")
        fields = {k: v for k, v in locals().items() if k in CMINConfig.__dataclass_fields__}
        CMINConfig(**fields)  # the config's checks, also for a model built without one
        self.video_dim = video_dim
        self.attn_window = attn_window
        self.window_widths = tuple(window_widths)
        self.official_boxes = official_boxes
        d = d_model
        self.embedding = nn.Embedding(vocab_size, word_dim, padding_idx=0)
        if embeddings is not None:
            with torch.no_grad():
                self.embedding.weight.copy_(as_embedding_tensor(embeddings, vocab_size=vocab_size,
                                                                embed_dim=word_dim))
        self.embedding.weight.requires_grad_(not freeze_embeddings)
        self.query_rnn = BiGRU(word_dim, d)
        self.gcn = nn.ModuleList(
            [SyntacticGCN(d, num_labels=num_dep_labels, edge_gates=gcn_edge_gates)
             for _ in range(num_gcn_layers if use_gcn else 0)]
        )
        self.attn = nn.ModuleList(
            [SelfAttention(video_dim, num_heads) for _ in range(num_attn_layers if use_self_attention else 0)]
        )
        self.video_rnn = BiGRU(video_dim, d)
        self.stages = nn.ModuleList(
            [InteractionStage(d, aggregation=use_aggregation, cross_gate=use_cross_gate, fusion=fusion,
                              dropout=dropout) for _ in range(num_interactions)]
        )
        K = len(self.window_widths)
        self.score = nn.Linear(d, K)
        self.offset = nn.Linear(d, 2 * K)
        self.dropout = nn.Dropout(dropout)
        widths = torch.tensor(self.window_widths, dtype=torch.float32)
        self.register_buffer("widths", widths, persistent=False)

    # -- inputs ------------------------------------------------------------------------------------

    def _inputs(self, batch: dict) -> tuple[Tensor, Tensor]:
        """The checked clips (B, T, video_dim) float and their mask (B, T) bool."""
        missing = [k for k in ("clips", "question", "question_len", "edges") if k not in batch]
        if missing:
            raise KeyError(f"CMIN needs batch keys {missing} (the 'cmin' clip features and the query with "
                           f"its dependency edges); the batch has {sorted(batch)}")
        clips, tokens, edges = batch["clips"], batch["question"], batch["edges"]
        if clips.dim() != 3 or clips.shape[2] != self.video_dim:
            raise ValueError(f"CMIN expects batch['clips'] of shape (B, T, {self.video_dim}) but got "
                             f"{tuple(clips.shape)}; set the model config's video_dim to the clips' size "
                             "(after moment.pca_dim)")
        B, T, _ = clips.shape
        if tokens.dim() != 2 or tokens.shape[0] != B or tuple(batch["question_len"].shape) != (B,):
            raise ValueError(f"CMIN expects batch['question'] (B, L) and batch['question_len'] (B,) with "
                             f"B={B} but got {tuple(tokens.shape)} and {tuple(batch['question_len'].shape)}")
        L = tokens.shape[1]
        if edges.dim() != 3 or edges.shape[0] != B or edges.shape[1] < L or edges.shape[2] < L:
            raise ValueError(f"CMIN expects batch['edges'] of shape ({B}, L', L') with L' >= {L} (the query "
                             f"length) but got {tuple(edges.shape)}")
        mask = batch.get("clips_mask")
        if mask is not None and tuple(mask.shape) != (B, T):
            raise ValueError(f"CMIN expects batch['clips_mask'] of shape ({B}, {T}) but got "
                             f"{tuple(mask.shape)}")
        mask = torch.ones(B, T, dtype=torch.bool, device=clips.device) if mask is None else mask.bool()
        return clips.float(), mask

    # -- encoders ----------------------------------------------------------------------------------

    def encode_query(self, tokens: Tensor, lengths: Tensor, edges: Tensor) -> tuple[Tensor, Tensor]:
        """(B, L) tokens -> word features (B, L, d) and the word mask (B, L)."""
        B, L = tokens.shape
        lengths = lengths.clamp(min=1, max=L)
        mask = torch.arange(L, device=tokens.device).unsqueeze(0) < lengths.unsqueeze(1)  # (B, L)
        h = self.query_rnn(self.dropout(self.embedding(tokens)), lengths)  # (B, L, d)
        h = h * mask.unsqueeze(-1).to(h.dtype)
        edges = edges[:, :L, :L] * (mask.unsqueeze(1) & mask.unsqueeze(2))  # no edge touches padding
        for layer in self.gcn:
            h = h + self.dropout(layer(h, edges, mask))  # o = g + h  Eq. (1)
        return h, mask

    def encode_video(self, clips: Tensor, mask: Tensor) -> Tensor:
        """(B, T, video_dim) clips and (B, T) mask -> (B, T, d)."""
        B, T, _ = clips.shape
        x = self.dropout(clips) * mask.unsqueeze(-1).to(clips.dtype)
        if len(self.attn):
            allowed = mask.unsqueeze(1).expand(B, T, T)  # (B, T_q, T_k) keys must be valid
            if self.attn_window is not None:
                t = torch.arange(T, device=clips.device)
                allowed = allowed & ((t.view(-1, 1) - t.view(1, -1)).abs() <= self.attn_window)
            allowed = allowed | ~mask.unsqueeze(2)  # padded queries attend freely (then zeroed)
            for layer in self.attn:
                x = x + self.dropout(layer(x, allowed.unsqueeze(1)))  # V^S = MultiHead(V, V, V) + V  Eq. (2)
                x = x * mask.unsqueeze(-1).to(x.dtype)
        lengths = mask.sum(1)
        return self.dropout(self.video_rnn(x, lengths)) * mask.unsqueeze(-1).to(x.dtype)  # (B, T, d)  Eq. (3)

    # -- forward -----------------------------------------------------------------------------------

    def forward(self, batch: dict) -> dict[str, Tensor]:
        clips, mask = self._inputs(batch)  # (B, T, Dv), (B, T)
        B, T, _ = clips.shape
        lengths = mask.sum(1)  # (B,)
        words, word_mask = self.encode_query(batch["question"], batch["question_len"], batch["edges"])
        h = self.encode_video(clips, mask)
        attn = None
        for stage in self.stages:
            h, attn = stage(h, words, word_mask, lengths, mask)  # (B, T, d)  Eq. (4)-(6)
            h = h * mask.unsqueeze(-1).to(h.dtype)
        K = len(self.window_widths)
        scores = self.score(h)  # (B, T, K)  Eq. (7)
        offsets = self.offset(h).view(B, T, K, 2)
        windows = window_layout(T, self.window_widths).to(clips.device)  # (T*K, 2)
        wmask = valid_windows(windows, lengths, official=self.official_boxes)  # (B, T*K)
        anchors = integer_anchors(windows) if self.official_boxes else windows  # (T*K, 2)
        out = {
            "window_scores": scores.reshape(B, T * K),
            "window_offsets": offsets.reshape(B, T * K, 2),
            "window_mask": wmask,  # (B, T*K)
            "windows": windows,
            "anchors": anchors,
            "word_attention": attn,
            "num_steps": lengths,
        }
        if not self.training:
            out["step_scores"] = step_relevance(out["window_scores"], windows, wmask, mask)
        return out


# --------------------------------------------------------------------------------------------------
# Builder
# --------------------------------------------------------------------------------------------------


def cmin(
    cfg: CMINConfig,
    *,
    vocab_size: int,
    num_answers: int = 0,
    task_type: str = "moment",
    embeddings: np.ndarray | Tensor | None = None,
) -> CMIN:
    """Build CMIN from its config (the registry's ``build``).

    Args:
        cfg: a :class:`CMINConfig`.
        vocab_size: query vocabulary size.
        num_answers: unused (moment retrieval has no answer classes).
        task_type: must be ``"moment"``.
        embeddings: optional (vocab_size, cfg.word_dim) GloVe matrix.

    Returns:
        An untrained :class:`CMIN` (no pretrained CMIN weights are published).
    """
    if not isinstance(cfg, CMINConfig):
        raise TypeError(f"cmin() needs a CMINConfig, got {type(cfg).__name__}")
    return CMIN(
        vocab_size=vocab_size, task_type=task_type, embeddings=embeddings,
        **{f: getattr(cfg, f) for f in cfg.__dataclass_fields__},
    )
