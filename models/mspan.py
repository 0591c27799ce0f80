"""MSPAN: Multi-Scale Progressive Attention Network for video question answering.

Guo et al., "Multi-Scale Progressive Attention Network for Video Question Answering", ACL-IJCNLP 2021.
Official code: https://github.com/gzcsudo/MSPAN-VideoQA (read for reference; nothing copied).

What this file computes (N frames, K scales, T iterations, D node size, H question size)::

    v_n   = FC([a_n; m_n])                                  appearance + motion of frame n -> R^D
    Eq. (1)-(4)  multi-scale graphs. Scale i = 1..K max-pools the frame sequence with kernel i, stride 1:
                 node x of G_i (x = 0..M_i-1, M_i = N - i + 1) covers frames x .. x+i-1 and
                 v^i_x = max(v_x, ..., v_{x+i-1}); nodes x, y of G_i are joined when |x - y| <= i
                 (their frames overlap or are adjacent; self-loops included).
    Eq. (5)      same-scale interaction, a GCN shared by the K graphs:
                 V^{l+1} = ELU(D^-1/2 A D^-1/2 V^l W^l + b^l)   (no ELU after the last layer)
    Eq. (6)      top-down score of source node x in G_i for target node y in G_{i+1}:
                 m_xy = (W1 v^{i+1}_y) . ((W2 v^i_x) * (W3 q))
    Eq. (7)      a_xy = softmax of m_xy over the neighbours x of y only
    Eq. (8)      message of x: (W4 v^i_x) * (W5 q)
    Eq. (9)      V^u_{i+1}: for each y, sum_x a_xy (W4 v^i_x) * (W5 q)
    Eq. (10)     V_{i+1} <- W6 [V_{i+1}; V^u_{i+1}] + V^o_{i+1}     (V^o: the graph built by Eq. 1-4)
                 top-down runs i = 1 .. K-1 in order, each step reading the scale the previous step updated;
                 bottom-up has the same form from G_i to G_{i-1} (i = K .. 2) with a second weight set.
                 One iteration = GCN, top-down, bottom-up; the model runs T of them.
    Eq. (11)     s_x = w^T ELU((W7 v^1_x) * (W8 q)) over the nodes of G_1
    Eq. (12)     F~ = sum_x softmax(s)_x v^1_x
    Eq. (13)     F = ELU((W10 F~) * (W11 q) + b)
    answer decoder: two FC layers on F (open-ended: classifier; count: one regressed value;
    multiple choice: one score per candidate, see below).

Two settings (``variant``). ``"paper"`` (default) computes the equations above as the paper writes them.
``"official"`` computes what the official code (gzcsudo/MSPAN-VideoQA) computes, so that its released
checkpoints can be converted (``vqa-convert mspan``) and evaluated here. Point by point:

1. Weights across iterations: the paper says the GCN and cross-scale weights are shared across the
   *scales* and says nothing about the T iterations. The official code keeps one GCN and two
   cross-scale attention sets (top-down, bottom-up) per iteration, and so does our default in both
   settings; ``share_iteration_weights=True`` shares one set over the iterations (a switch, not the
   paper's claim).
2. Cross-scale edges: paper -- node x of G_i (frames x..x+i-1) and node y of G_{i+1} (frames y..y+i)
   are linked when their frames overlap: y - i + 1 <= x <= y + i. Official -- |x - y| <= i - 1, which
   leaves out x = y + i (the node sharing only the last frame of y).
3. Eq. (7): paper -- softmax over the neighbours only. Official -- the scores are multiplied by the 0/1
   adjacency before a softmax over *all* source nodes, so non-neighbours still get weight exp(0).
4. Eq. (6), (8), (9): paper -- plain products of projections; we apply dropout to the aggregated
   messages. Official -- the key (W2 v * W3 q) and the message (W4 v * W5 q) each pass through ELU and
   dropout, and the aggregate through ELU and dropout again before W6.
5. Eq. (10): paper -- every cross-scale update adds V^o of its target scale. Official -- no residual
   inside the passes; the initial graphs V^o are added to all K scales once per iteration, after
   bottom-up.
6. Answer decoder: paper -- two FC layers. Official -- for open-ended and count a BatchNorm sits
   between them (FC, ELU, BatchNorm, dropout, FC); under DDP it normalises with the per-GPU batch.
7. Question: paper -- GloVe-300 -> 3-layer BiLSTM -> q in R^512; we take the last layer's final states.
   Official -- the first layer's final states (which looks like a slip, but the checkpoints need it).
8. Readout score layer w (Eq. 11): the official layer has a bias; it cancels in the softmax and is
   kept in ``"official"`` only so that the checkpoints load. With more than 2 GCN layers the official
   GCN applies ELU after its first layer only (ours: after every layer but the last).

The settings agree on everything else: node size (the paper's v in R^2048 = FC(concat(2048-d
appearance, 2048-d motion)), W1..W5 and the question in R^512), the GCN (Eq. 5, ELU and dropout between
its layers), the readout (Eq. 11-12; readout dropout 0.2 as in the official code), Eq. (13) with its bias,
and multiple choice: the paper encodes each candidate like the question and fuses it the same way; as
in the official code, [F(q); F(a); W q; W a] (F(a) from Eq. 13 with its own weights and the candidate a
in place of q) feeds the two-layer decoder, which gives the candidate's score, and the reasoning graph
itself is guided by the question only. Candidates of length 0 (empty, or padding added by the collate)
get the score -inf and can never be chosen. Equation numbers 1-4, 5, 11-12 and 13 follow the paper's
grouping; how Eq. (6)-(10) split into the individual lines above is our labelling of the cross-scale
attention.

Explanations: besides its prediction the forward returns ``readout_weights`` (B, M), the Eq. (12)
softmax over the nodes read out (G_1: node x = frame x), and ``cross_scale_attention`` (B, P, S, S),
the Eq. (7) weights of every cross-scale pass in the packed node order (see :meth:`MSPAN.node_spans`);
both are detached from the graph.

Ablations (config switches): ``pool="avg"``; ``use_gcn=False``; ``interaction="top_down"`` or
``"bottom_up"`` (one pass per iteration, one weight set) or ``"dense"``: no progression, every node of
every scale attends at once, with Eq. (6)-(10) and a single weight set, to the nodes of all *other*
scales whose frames it shares, and the readout reads the nodes of all K graphs (as in the paper's
ablation) instead of G_1;
``iterations`` T in 0.. (0 reads out the pooled frames); ``num_scales`` K in 1..N. The official code has
no ablations; combined with ``variant="official"`` they use its attention and residual forms (the dense
ablation keeps the shared-frame edges).
The readout (Eq. 11-12) reads G_1, where the bottom-up pass ends. With ``"top_down"`` alone, G_1 never
receives a cross-scale message (the GCN stays within a scale), so the readout reads G_K, where that pass
ends; reading G_1 there would make the ablation identical to having no interaction at all.

Implementation: the K graphs are packed side by side into one (B, S, D) tensor with S = sum_i M_i
(S = 100 for N = 16, K = 8), so the GCN is one block-diagonal matmul over all scales, and the
cross-scale target projections (W1 v, the V-block of W6) run once per pass over all scales. Only the
source side of the progressive passes loops over scales, because each step reads the previous step's
output (that dependency is what makes the attention progressive). Graph tensors are buffers built once
in ``__init__``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from models.layers import QuestionEncoder

__all__ = [
    "MSPAN",
    "MSPANConfig",
    "MultiScaleGraphs",
    "MultiScalePooling",
    "ScaleGCN",
    "CrossScaleAttention",
    "QuestionGuidedReadout",
    "QuestionFusion",
    "build_graphs",
    "mspan",
]

POOLS = ("max", "avg")
INTERACTIONS = ("progressive", "dense", "top_down", "bottom_up")
TASK_TYPES = ("open", "mc", "count")
VARIANTS = ("paper", "official")


# --------------------------------------------------------------------------------------------------
# Config
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MSPANConfig:
    """MSPAN hyper-parameters; defaults are the paper's (official code where the paper is silent).

    Attributes:
        num_frames: N, frames per video in the features (16).
        appearance_dim: size of the ``appearance`` feature (2048, ResNet-152 pool5).
        motion_dim: size of the ``motion`` feature (2048, 3D ResNet-152).
        node_dim: D, size of the graph nodes after the input FC (2048).
        hidden_dim: H, question vector and attention projection size (512).
        word_dim: word-vector size (300, GloVe).
        lstm_layers: BiLSTM layers of the question encoder (3).
        freeze_embeddings: keep the (GloVe-initialised) word embedding fixed (official code trains it).
        num_scales: K, number of max-pool scales (8).
        iterations: T, iterations of GCN + cross-scale interaction (3).
        gcn_layers: GCN layers per iteration (2).
        pool: ``"max"`` (paper) or ``"avg"`` (ablation).
        use_gcn: run the same-scale GCN (ablation: False).
        interaction: ``"progressive"`` (top-down then bottom-up), ``"dense"``, ``"top_down"`` or
            ``"bottom_up"``.
        share_iteration_weights: one set of GCN/cross-scale weights for all T iterations, or one set per
            iteration (default; the official code's layout, about which the paper is silent).
        dropout: dropout rate (official scripts: 0.1 Action, 0.2 Count, 0.3 FrameQA, Transition, MSVD-QA,
            MSRVTT-QA; ``vqa-train`` applies these per task).
        readout_dropout: dropout inside the Eq. (11) readout scores (0.2, the official code's).
        variant: ``"paper"`` (the equations as written) or ``"official"`` (what the official code
            computes; see the module docstring, points 2-8).
    """

    num_frames: int = 16
    appearance_dim: int = 2048
    motion_dim: int = 2048
    node_dim: int = 2048
    hidden_dim: int = 512
    word_dim: int = 300
    lstm_layers: int = 3
    freeze_embeddings: bool = False
    num_scales: int = 8
    iterations: int = 3
    gcn_layers: int = 2
    pool: Literal["max", "avg"] = "max"
    use_gcn: bool = True
    interaction: Literal["progressive", "dense", "top_down", "bottom_up"] = "progressive"
    share_iteration_weights: bool = False
    dropout: float = 0.1
    readout_dropout: float = 0.2
    variant: Literal["paper", "official"] = "paper"

    def __post_init__(self) -> None:
        def bad(name: str, why: str) -> ValueError:
            return ValueError(f"MSPANConfig.{name}={getattr(self, name)!r} is invalid: {why}")

        for name in ("num_frames", "appearance_dim", "motion_dim", "node_dim", "hidden_dim", "word_dim",
                     "lstm_layers", "num_scales", "gcn_layers"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise bad(name, "must be an integer")
            if value < 1:
                raise bad(name, "must be >= 1")
        if isinstance(self.iterations, bool) or not isinstance(self.iterations, int) or self.iterations < 0:
            raise bad("iterations", "must be an integer >= 0 (the paper studies T = 0..4)")
        if self.num_scales > self.num_frames:
            raise bad("num_scales", f"must be <= num_frames ({self.num_frames}); scale i pools i frames")
        if self.hidden_dim % 2:
            raise bad("hidden_dim", "must be even (the BiLSTM has two directions of hidden_dim // 2)")
        for name in ("freeze_embeddings", "use_gcn", "share_iteration_weights"):
            if not isinstance(getattr(self, name), bool):
                raise bad(name, "must be true or false")
        if self.pool not in POOLS:
            raise bad("pool", f"choose one of {', '.join(map(repr, POOLS))}")
        if self.interaction not in INTERACTIONS:
            raise bad("interaction", f"choose one of {', '.join(map(repr, INTERACTIONS))}")
        if self.variant not in VARIANTS:
            raise bad("variant", f"choose one of {', '.join(map(repr, VARIANTS))}")
        for name in ("dropout", "readout_dropout"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise bad(name, "must be a number in [0, 1)")
            if not 0.0 <= float(value) < 1.0:
                raise bad(name, "must be in [0, 1)")


# --------------------------------------------------------------------------------------------------
# Graph construction (pure functions of N and K)
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MultiScaleGraphs:
    """The K scale graphs packed side by side (S = sum_i M_i nodes).

    Attributes:
        sizes: M_i = N - i + 1 for i = 1..K.
        offsets: (K + 1,) start of each scale in the packed node axis; scale i (1-based) is
            ``offsets[i-1]:offsets[i]``.
        scale: (S,) int64, 1-based scale of every packed node.
        start: (S,) int64, first frame of every node; its frames are start .. start + scale - 1.
        intra: (S, S) bool, same-scale edges |x - y| <= i (self-loops included), block diagonal.
        gcn_adj: (S, S) float32, D^-1/2 A D^-1/2 of ``intra`` (Eq. 5).
        overlap: (S, S) bool, nodes whose frame spans share at least one frame (any two scales).
    """

    sizes: tuple[int, ...]
    offsets: tuple[int, ...]
    scale: Tensor
    start: Tensor
    intra: Tensor
    gcn_adj: Tensor
    overlap: Tensor

    def cross(self, target: int, source: int) -> Tensor:
        """Cross-scale edges between two scales (1-based).

        Returns:
            (M_target, M_source) bool: entry [y, x] links source node x to target node y.
        """
        o = self.offsets
        return self.overlap[o[target - 1]:o[target], o[source - 1]:o[source]]

    def official_cross(self, target: int, source: int) -> Tensor:
        """The official code's edges between adjacent scales (1-based): |x - y| <= i - 1 for the finer i.

        Returns:
            (M_target, M_source) bool, like :meth:`cross`.
        """
        if abs(target - source) != 1:
            raise ValueError(f"the official edge rule links adjacent scales only, got {target} and {source}")
        o = self.offsets
        finer = min(target, source)
        x = self.start[o[target - 1]:o[target]]  # (M_target,)
        y = self.start[o[source - 1]:o[source]]  # (M_source,)
        return (x[:, None] - y[None, :]).abs() <= finer - 1

    def dense(self) -> Tensor:
        """(S, S) bool edges of the dense interaction: shared frames, different scales."""
        return self.overlap & (self.scale[:, None] != self.scale[None, :])


def build_graphs(num_frames: int, num_scales: int) -> MultiScaleGraphs:
    """Build the multi-scale graph structure of Eq. (1)-(5) and the cross-scale edges.

    Args:
        num_frames: N >= 1.
        num_scales: K in 1..N.

    Returns:
        A :class:`MultiScaleGraphs` with CPU tensors.
    """
    if not 1 <= num_scales <= num_frames:
        raise ValueError(
            f"need 1 <= num_scales <= num_frames, got num_scales={num_scales}, num_frames={num_frames}"
        )
    sizes = tuple(num_frames - i + 1 for i in range(1, num_scales + 1))  # Eq. (1)-(4): M_i = N - i + 1
    offsets = tuple(int(v) for v in np.concatenate([[0], np.cumsum(sizes)]))
    scale = torch.cat([torch.full((m,), i, dtype=torch.int64) for i, m in enumerate(sizes, start=1)])
    start = torch.cat([torch.arange(m, dtype=torch.int64) for m in sizes])
    end = start + scale - 1  # last frame covered by each node
    same = scale[:, None] == scale[None, :]
    intra = same & ((start[:, None] - start[None, :]).abs() <= scale[:, None])  # |x - y| <= i
    overlap = (start[:, None] <= end[None, :]) & (start[None, :] <= end[:, None])
    a = intra.to(torch.float32)
    d = a.sum(dim=1).rsqrt()
    gcn_adj = d[:, None] * a * d[None, :]  # Eq. (5): D^-1/2 A D^-1/2
    return MultiScaleGraphs(sizes, offsets, scale, start, intra, gcn_adj, overlap)


# --------------------------------------------------------------------------------------------------
# Blocks
# --------------------------------------------------------------------------------------------------


class MultiScalePooling(nn.Module):
    """Eq. (1)-(4): pool the frame sequence with kernels 1..K (stride 1) and pack the K graphs.

    Args:
        num_scales: K.
        pool: ``"max"`` or ``"avg"``.

    Forward:
        frames: (B, N, D).

    Returns:
        (B, S, D), scale 1 first; S = sum_i (N - i + 1).
    """

    def __init__(self, num_scales: int, pool: str = "max") -> None:
        super().__init__()
        if pool not in POOLS:
            raise ValueError(f"pool must be one of {POOLS}, got {pool!r}")
        self.num_scales = num_scales
        self.pool = pool

    def forward(self, frames: Tensor) -> Tensor:
        x = frames.transpose(1, 2)  # (B, D, N)
        fn = F.max_pool1d if self.pool == "max" else F.avg_pool1d
        scales = [fn(x, kernel_size=i, stride=1) for i in range(1, self.num_scales + 1)]  # (B, D, M_i)
        return torch.cat(scales, dim=2).transpose(1, 2)  # (B, S, D)


class ScaleGCN(nn.Module):
    """Eq. (5): a GCN with symmetric normalisation; one set of weights for every scale.

    Args:
        dim: node size D (in and out).
        num_layers: GCN layers.
        dropout: dropout after each hidden activation.
        elu_after_first_only: ELU (and dropout) after the first layer only, as the official code does
            (the same as the default for 2 layers).

    Forward:
        nodes: (B, S, D) packed scales; adj: (S, S) normalised block-diagonal adjacency.

    Returns:
        (B, S, D).
    """

    def __init__(self, dim: int, *, num_layers: int = 2, dropout: float = 0.0,
                 elu_after_first_only: bool = False) -> None:
        super().__init__()
        self.layers = nn.ModuleList(nn.Linear(dim, dim) for _ in range(num_layers))
        self.dropout = nn.Dropout(dropout)
        self.elu_after_first_only = elu_after_first_only  # the official code's placement

    def forward(self, nodes: Tensor, adj: Tensor) -> Tensor:
        h = nodes
        for i, layer in enumerate(self.layers):
            h = layer(adj @ h)  # (B, S, D)  Eq. (5): A_hat V W + b
            if i == 0 if self.elu_after_first_only else i < len(self.layers) - 1:
                h = self.dropout(F.elu(h))
        return h


class CrossScaleAttention(nn.Module):
    """Eq. (6)-(10): question-guided attention from source nodes to target nodes along given edges.

    One weight set W1..W6. ``W6 [V; V^u]`` is held as its two column blocks ``w6_node`` (on V, with
    the bias) and ``w6_msg`` (on V^u).

    Args:
        node_dim: D.
        hidden_dim: H (question size and projection size).
        dropout: dropout on the aggregated messages (``official``: also on the keys and messages).
        official: the official code's form (module docstring, points 3-5): ELU and dropout on the
            key, the message and the aggregate; scores multiplied by the 0/1 edges before a softmax
            over all sources; :meth:`update` adds no residual.
    """

    def __init__(self, node_dim: int, hidden_dim: int, *, dropout: float = 0.0,
                 official: bool = False) -> None:
        super().__init__()
        self.official = official
        self.w1 = nn.Linear(node_dim, hidden_dim, bias=False)  # target
        self.w2 = nn.Linear(node_dim, hidden_dim, bias=False)  # source, score
        self.w3 = nn.Linear(hidden_dim, hidden_dim, bias=False)  # question, score
        self.w4 = nn.Linear(node_dim, hidden_dim, bias=False)  # source, message
        self.w5 = nn.Linear(hidden_dim, hidden_dim, bias=False)  # question, message
        self.w6_node = nn.Linear(node_dim, node_dim)
        self.w6_msg = nn.Linear(hidden_dim, node_dim, bias=False)
        self.dropout = nn.Dropout(dropout)

    def attend(
        self, source: Tensor, target_key: Tensor, q_score: Tensor, q_msg: Tensor, edges: Tensor
    ) -> tuple[Tensor, Tensor]:
        """Eq. (6)-(9): aggregated messages for every target node.

        Args:
            source: (B, Ms, D) source nodes.
            target_key: (B, Mt, H) ``w1`` of the target nodes.
            q_score: (B, H) ``w3 q``; q_msg: (B, H) ``w5 q``.
            edges: (Mt, Ms) bool; every target row must have at least one edge.

        Returns:
            ``(messages, weights)``: (B, Mt, H) V^u and the (B, Mt, Ms) attention weights of Eq. (7).
        """
        key = self.w2(source) * q_score[:, None]  # (B, Ms, H)
        msg = self.w4(source) * q_msg[:, None]  # (B, Ms, H)  Eq. (8)
        if self.official:
            key, msg = self.dropout(F.elu(key)), self.dropout(F.elu(msg))
        m = target_key @ key.transpose(1, 2)  # (B, Mt, Ms)  Eq. (6)
        if self.official:
            m = m * edges.to(m.dtype)  # official: non-neighbours keep the score 0, weight exp(0)
        else:
            m = m.masked_fill(~edges, float("-inf"))  # Eq. (7): over neighbours only
        a = torch.softmax(m.float(), dim=-1).to(source.dtype)  # (B, Mt, Ms)  Eq. (7)
        u = a @ msg  # (B, Mt, H)  Eq. (9)
        return self.dropout(F.elu(u) if self.official else u), a

    def update(self, target_self: Tensor, messages: Tensor) -> Tensor:
        """Eq. (10) given ``target_self = w6_node(V) + V^o``: returns W6 [V; V^u] + V^o, (B, Mt, D).

        (``official``: ``target_self = w6_node(V)``, no V^o; the caller adds V^o once per iteration.)
        """
        return target_self + self.w6_msg(messages)


class QuestionGuidedReadout(nn.Module):
    """Eq. (11)-(12): question-guided attention pooling of the nodes of G_1.

    Args:
        node_dim, hidden_dim: D and H.
        dropout: dropout on ELU(...) before the score layer.
        score_bias: give the score layer a bias (it cancels in the softmax; the official layer has one).

    Forward:
        nodes: (B, M, D); q: (B, H).

    Returns:
        ``(video, weights)``: (B, D) the attended video vector F~ and the (B, M) softmax weights.
    """

    def __init__(self, node_dim: int, hidden_dim: int, *, dropout: float = 0.0,
                 score_bias: bool = False) -> None:
        super().__init__()
        self.w7 = nn.Linear(node_dim, hidden_dim, bias=False)
        self.w8 = nn.Linear(hidden_dim, hidden_dim, bias=False)
        self.w9 = nn.Linear(hidden_dim, 1, bias=score_bias)
        self.dropout = nn.Dropout(dropout)

    def forward(self, nodes: Tensor, q: Tensor) -> tuple[Tensor, Tensor]:
        s = self.w9(self.dropout(F.elu(self.w7(nodes) * self.w8(q)[:, None])))  # (B, M, 1)  Eq. (11)
        alpha = torch.softmax(s.float(), dim=1).to(nodes.dtype)  # (B, M, 1)
        return (alpha * nodes).sum(dim=1), alpha.squeeze(-1)  # (B, D)  Eq. (12), (B, M)


class QuestionFusion(nn.Module):
    """Eq. (13): F = ELU((W10 F~) * (W11 q) + b), then dropout.

    Forward:
        video: (..., D); text: (..., H) with matching leading dims.

    Returns:
        (..., H).
    """

    def __init__(self, node_dim: int, hidden_dim: int, *, dropout: float = 0.0) -> None:
        super().__init__()
        self.w10 = nn.Linear(node_dim, hidden_dim, bias=False)
        self.w11 = nn.Linear(hidden_dim, hidden_dim, bias=False)
        self.bias = nn.Parameter(torch.zeros(hidden_dim))
        self.dropout = nn.Dropout(dropout)

    def forward(self, video: Tensor, text: Tensor) -> Tensor:
        return self.dropout(F.elu(self.w10(video) * self.w11(text) + self.bias))  # Eq. (13)


def _decoder(in_dim: int, hidden_dim: int, out_dim: int, dropout: float, *,
             batch_norm: bool = False) -> nn.Sequential:
    """The answer decoder: two FC layers (``batch_norm``: the official FC, ELU, BatchNorm, dropout, FC)."""
    norm = [nn.BatchNorm1d(hidden_dim)] if batch_norm else []
    return nn.Sequential(
        nn.Linear(in_dim, hidden_dim), nn.ELU(), *norm, nn.Dropout(dropout), nn.Linear(hidden_dim, out_dim)
    )


class _Iteration(nn.Module):
    """The weights of one iteration: the GCN and one or two cross-scale attention sets."""

    def __init__(self, *, node_dim: int, hidden_dim: int, gcn_layers: int, use_gcn: bool,
                 interaction: str, cross_scale: bool, dropout: float, official: bool) -> None:
        super().__init__()
        self.gcn = ScaleGCN(node_dim, num_layers=gcn_layers, dropout=dropout,
                            elu_after_first_only=official) if use_gcn else None
        wanted = {
            "top_down": interaction in ("progressive", "top_down"),
            "bottom_up": interaction in ("progressive", "bottom_up"),
            "dense": interaction == "dense",
        }
        for name, on in wanted.items():
            att = (CrossScaleAttention(node_dim, hidden_dim, dropout=dropout, official=official)
                   if cross_scale and on else None)
            setattr(self, name, att)


# --------------------------------------------------------------------------------------------------
# Model
# --------------------------------------------------------------------------------------------------


class MSPAN(nn.Module):
    """Multi-Scale Progressive Attention Network (see the module docstring for the equations).

    Args (keyword-only):
        vocab_size: question vocabulary size (id 0 = padding).
        task_type: ``"open"`` (classifier over ``num_answers``), ``"mc"`` (candidate scores) or
            ``"count"`` (regression).
        num_answers: answer classes for ``"open"`` (ignored otherwise).
        embeddings: optional (vocab_size, word_dim) word vectors (GloVe) to initialise the embedding.
        the remaining arguments are the fields of :class:`MSPANConfig`.

    Forward:
        batch: dict with ``appearance`` (B, N, Da), ``motion`` (B, N, Dm), ``question`` (B, L) int64,
            ``question_len`` (B,), and for ``"mc"`` ``candidates`` (B, C, Lc) and ``candidates_len`` (B, C)
            (a candidate of length 0 is padding and scores -inf).
            Feature masks are not read: the ``mspan`` feature set always has exactly N frames.
            The batch is not modified.

    Returns:
        ``{"logits": (B, A)}``, ``{"scores": (B, C)}`` or ``{"count": (B,)}``, plus the explanations
        (detached): ``readout_weights`` (B, M), the Eq. (12) weights over the nodes read out (G_1, node
        x = frame x; G_K for ``interaction="top_down"``; all S packed nodes for ``"dense"``), and
        ``cross_scale_attention`` (B, P, S, S): for each of the P cross-scale passes in order (T
        iterations x [top-down, bottom-up], or one pass per iteration for the other interactions),
        entry [b, p, y, x] is the Eq. (7) weight of packed source node x for packed target node y
        (0 where x is not a source of y in that pass). :meth:`node_spans` gives each packed node's
        scale and first frame.
    """

    def __init__(
        self,
        *,
        vocab_size: int,
        task_type: str,
        num_answers: int = 0,
        num_frames: int = 16,
        appearance_dim: int = 2048,
        motion_dim: int = 2048,
        node_dim: int = 2048,
        hidden_dim: int = 512,
        word_dim: int = 300,
        lstm_layers: int = 3,
        freeze_embeddings: bool = False,
        num_scales: int = 8,
        iterations: int = 3,
        gcn_layers: int = 2,
        pool: str = "max",
        use_gcn: bool = True,
        interaction: str = "progressive",
        share_iteration_weights: bool = False,
        dropout: float = 0.1,
        readout_dropout: float = 0.2,
        variant: str = "paper",
        embeddings: np.ndarray | Tensor | None = None,
    ) -> None:
        super().__init__()
        if task_type not in TASK_TYPES:
            raise ValueError(f"task_type must be one of {TASK_TYPES}, got {task_type!r}")
        if task_type == "open" and num_answers < 1:
            raise ValueError(f"an open-ended MSPAN needs num_answers >= 1, got {num_answers}")
        if interaction not in INTERACTIONS:
            raise ValueError(f"interaction must be one of {INTERACTIONS}, got {interaction!r}")
        if variant not in VARIANTS:
            raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")
        official = variant == "official"
        self.task_type = task_type
        self.num_frames = num_frames
        self.appearance_dim = appearance_dim
        self.motion_dim = motion_dim
        self.iterations = iterations
        self.interaction = interaction
        self.share_iteration_weights = share_iteration_weights
        self.official = official

        graphs = build_graphs(num_frames, num_scales)
        self.sizes = graphs.sizes
        self.offsets = graphs.offsets
        self.register_buffer("node_scale", graphs.scale, persistent=False)
        self.register_buffer("node_start", graphs.start, persistent=False)
        self.register_buffer("gcn_adj", graphs.gcn_adj, persistent=False)
        self.register_buffer("dense_edges", graphs.dense(), persistent=False)
        # adjacent-scale edges, (M_{i+1}, M_i) for i = 1..K-1 (top-down) and (M_i, M_{i+1}) for bottom-up
        cross = graphs.official_cross if official else graphs.cross
        for i in range(1, num_scales):
            self.register_buffer(f"down_edges_{i}", cross(i + 1, i).contiguous(), persistent=False)
            self.register_buffer(f"up_edges_{i}", cross(i, i + 1).contiguous(), persistent=False)

        self.question_encoder = QuestionEncoder(
            vocab_size, embed_dim=word_dim, hidden_dim=hidden_dim, num_layers=lstm_layers, dropout=dropout,
            embeddings=embeddings, freeze_embeddings=freeze_embeddings, sentence_layer=0 if official else -1,
        )
        self.input_proj = nn.Linear(appearance_dim + motion_dim, node_dim)  # v = FC([a; m])
        self.pooling = MultiScalePooling(num_scales, pool)  # Eq. (1)-(4)
        num_sets = 0 if iterations == 0 else (1 if share_iteration_weights else iterations)
        self.blocks = nn.ModuleList(
            _Iteration(node_dim=node_dim, hidden_dim=hidden_dim, gcn_layers=gcn_layers, use_gcn=use_gcn,
                       interaction=interaction, cross_scale=num_scales > 1, dropout=dropout,
                       official=official)
            for _ in range(num_sets)
        )
        self.readout = QuestionGuidedReadout(node_dim, hidden_dim, dropout=readout_dropout,
                                             score_bias=official)  # Eq. (11)-(12)
        self.fusion = QuestionFusion(node_dim, hidden_dim, dropout=dropout)  # Eq. (13)
        if task_type == "mc":
            self.candidate_fusion = QuestionFusion(node_dim, hidden_dim, dropout=dropout)
            self.question_proj = nn.Linear(hidden_dim, hidden_dim, bias=False)
            self.candidate_proj = nn.Linear(hidden_dim, hidden_dim, bias=False)
            self.decoder = _decoder(4 * hidden_dim, hidden_dim, 1, dropout)
        else:
            out_dim = num_answers if task_type == "open" else 1
            self.decoder = _decoder(hidden_dim, hidden_dim, out_dim, dropout, batch_norm=official)

    def node_spans(self) -> tuple[Tensor, Tensor]:
        """``(scale, start)``: (S,) int64 1-based scale and first frame of every packed node."""
        return self.node_scale, self.node_start

    # -- cross-scale passes ------------------------------------------------------------------------

    def _residual(self, orig: Tensor, lo: int, hi: int) -> Tensor | float:
        """V^o of packed nodes lo:hi for Eq. (10); the official form adds it once per iteration instead."""
        return 0.0 if self.official else orig[:, lo:hi]

    def _top_down(self, att: CrossScaleAttention, nodes: Tensor, orig: Tensor, q: Tensor,
                  weights: Tensor) -> Tensor:
        """G_i -> G_{i+1} for i = 1..K-1, in order (Eq. 6-10). nodes/orig: (B, S, D) -> (B, S, D).

        ``weights`` (B, S, S) receives the attention weights of this pass.
        """
        o, m1 = self.offsets, self.sizes[0]
        targets = nodes[:, m1:]  # (B, S - M_1, D): scales 2..K before this pass
        keys = att.w1(targets).split(self.sizes[1:], dim=1)  # Eq. (6) target side, all scales at once
        selfs = (att.w6_node(targets) + self._residual(orig, m1, o[-1])).split(self.sizes[1:], dim=1)
        q_score, q_msg = att.w3(q), att.w5(q)
        out = [nodes[:, :m1]]
        for i in range(1, len(self.sizes)):
            u, a = att.attend(out[-1], keys[i - 1], q_score, q_msg, getattr(self, f"down_edges_{i}"))
            weights[:, o[i]:o[i + 1], o[i - 1]:o[i]] = a.detach()
            out.append(att.update(selfs[i - 1], u))  # (B, M_{i+1}, D)  Eq. (10)
        return torch.cat(out, dim=1)

    def _bottom_up(self, att: CrossScaleAttention, nodes: Tensor, orig: Tensor, q: Tensor,
                   weights: Tensor) -> Tensor:
        """G_i -> G_{i-1} for i = K..2, in order (Eq. 6-10, second weight set). (B, S, D) -> (B, S, D)."""
        o, mk = self.offsets, self.sizes[-1]
        s = nodes.shape[1]
        targets = nodes[:, : s - mk]  # (B, S - M_K, D): scales 1..K-1 before this pass
        keys = att.w1(targets).split(self.sizes[:-1], dim=1)
        selfs = (att.w6_node(targets) + self._residual(orig, 0, s - mk)).split(self.sizes[:-1], dim=1)
        q_score, q_msg = att.w3(q), att.w5(q)
        out = [nodes[:, s - mk:]]  # built coarse to fine
        for i in range(len(self.sizes) - 1, 0, -1):  # target scale i (1-based) from source scale i + 1
            u, a = att.attend(out[-1], keys[i - 1], q_score, q_msg, getattr(self, f"up_edges_{i}"))
            weights[:, o[i - 1]:o[i], o[i]:o[i + 1]] = a.detach()
            out.append(att.update(selfs[i - 1], u))  # (B, M_i, D)  Eq. (10)
        return torch.cat(out[::-1], dim=1)

    def _dense(self, att: CrossScaleAttention, nodes: Tensor, orig: Tensor, q: Tensor,
               weights: Tensor) -> Tensor:
        """Ablation: every node attends at once to the overlapping nodes of all other scales."""
        u, a = att.attend(nodes, att.w1(nodes), att.w3(q), att.w5(q), self.dense_edges)  # (B, S, H)
        weights.copy_(a.detach())
        return att.update(att.w6_node(nodes) + self._residual(orig, 0, nodes.shape[1]), u)  # (B, S, D)

    # -- forward -----------------------------------------------------------------------------------

    def _features(self, batch: dict) -> Tensor:
        missing = [k for k in ("appearance", "motion", "question", "question_len") if k not in batch]
        if missing:
            raise KeyError(f"MSPAN needs batch keys {missing} (features of the 'mspan' feature set); "
                           f"the batch has {sorted(batch)}")
        app, mot = batch["appearance"], batch["motion"]
        for key, x, dim in (("appearance", app, self.appearance_dim), ("motion", mot, self.motion_dim)):
            if x.dim() != 3 or x.shape[1] != self.num_frames or x.shape[2] != dim:
                raise ValueError(
                    f"MSPAN expects batch[{key!r}] of shape (B, {self.num_frames}, {dim}) but got "
                    f"{tuple(x.shape)}; set the model config's num_frames / {key}_dim to match the features"
                )
        dtype = self.input_proj.weight.dtype
        return torch.cat([app.to(dtype), mot.to(dtype)], dim=-1)  # (B, N, Da + Dm)

    def _reason(self, orig: Tensor, q: Tensor) -> tuple[Tensor, Tensor]:
        """T iterations of GCN and cross-scale passes: the nodes (B, S, D) and the (B, P, S, S) weights."""
        passes = []
        nodes = orig
        for t in range(self.iterations):
            block = self.blocks[0 if self.share_iteration_weights else t]
            if block.gcn is not None:
                nodes = block.gcn(nodes, self.gcn_adj)  # (B, S, D)  Eq. (5)
            for name, step in (("top_down", self._top_down), ("bottom_up", self._bottom_up),
                               ("dense", self._dense)):
                att = getattr(block, name)
                if att is not None:
                    passes.append(nodes.new_zeros(nodes.shape[0], nodes.shape[1], nodes.shape[1]))
                    nodes = step(att, nodes, orig, q, passes[-1])
            if self.official:
                nodes = nodes + orig  # official: the initial graphs added once per iteration
        s = orig.shape[1]
        weights = torch.stack(passes, dim=1) if passes else orig.new_zeros(orig.shape[0], 0, s, s)
        return nodes, weights

    def forward(self, batch: dict) -> dict[str, Tensor]:
        v = self.input_proj(self._features(batch))  # (B, N, D)
        _, q = self.question_encoder(batch["question"], batch["question_len"])  # (B, H)
        orig = self.pooling(v)  # (B, S, D)  Eq. (1)-(4): V^o
        nodes, attention = self._reason(orig, q)
        if self.interaction == "top_down":  # ablation: the progression ends at G_K (see module docstring)
            nodes = nodes[:, self.offsets[-2]:]
        elif self.interaction != "dense":  # the dense ablation reads out all K graphs
            nodes = nodes[:, : self.sizes[0]]
        video, alpha = self.readout(nodes, q)  # (B, D), (B, M)  Eq. (11)-(12)
        out = {"readout_weights": alpha.detach(), "cross_scale_attention": attention}

        if self.task_type == "mc":
            out["scores"] = self._score_candidates(batch, video, q)
            return out
        pred = self.decoder(self.fusion(video, q))  # (B, A) or (B, 1)  Eq. (13) + decoder
        if self.task_type == "count":
            out["count"] = pred.squeeze(-1)  # (B,)
        else:
            out["logits"] = pred
        return out

    def _score_candidates(self, batch: dict, video: Tensor, q: Tensor) -> Tensor:
        if "candidates" not in batch or "candidates_len" not in batch:
            raise KeyError(
                "a multiple-choice MSPAN needs batch['candidates'] (B, C, Lc) and "
                "batch['candidates_len'] (B, C)"
            )
        cands, cand_len = batch["candidates"], batch["candidates_len"]
        B, C, Lc = cands.shape
        _, a = self.question_encoder(cands.reshape(B * C, Lc), cand_len.reshape(B * C))
        a = a.view(B, C, -1)  # (B, C, H)
        video_c = video[:, None].expand(B, C, video.shape[-1])  # (B, C, D)
        f_q = self.fusion(video, q)[:, None].expand(B, C, a.shape[-1])  # (B, C, H)  Eq. (13)
        f_a = self.candidate_fusion(video_c, a)  # (B, C, H)  Eq. (13) with the candidate
        q_c = self.question_proj(q)[:, None].expand(B, C, a.shape[-1])  # (B, C, H)
        joint = torch.cat([f_q, f_a, q_c, self.candidate_proj(a)], dim=-1)  # (B, C, 4H)
        scores = self.decoder(joint).squeeze(-1)  # (B, C)
        return scores.masked_fill(cand_len.reshape(B, C).to(scores.device) < 1, float("-inf"))


# --------------------------------------------------------------------------------------------------
# Builder
# --------------------------------------------------------------------------------------------------


def mspan(
    cfg: MSPANConfig,
    *,
    vocab_size: int,
    num_answers: int,
    task_type: str,
    embeddings: np.ndarray | Tensor | None = None,
) -> MSPAN:
    """Build MSPAN from its config (the registry's ``build``).

    Args:
        cfg: an :class:`MSPANConfig`.
        vocab_size: question vocabulary size.
        num_answers: answer classes (open-ended; ignored for mc / count).
        task_type: ``"open"``, ``"mc"`` or ``"count"``.
        embeddings: optional (vocab_size, cfg.word_dim) GloVe matrix.

    Returns:
        An untrained :class:`MSPAN`. (The official code's released checkpoints convert with
        ``vqa-convert mspan`` into the ``variant="official"`` setting.)
    """
    if not isinstance(cfg, MSPANConfig):
        raise TypeError(f"mspan() needs an MSPANConfig, got {type(cfg).__name__}")
    return MSPAN(
        vocab_size=vocab_size, task_type=task_type, num_answers=num_answers, embeddings=embeddings,
        **{f: getattr(cfg, f) for f in cfg.__dataclass_fields__},
    )
