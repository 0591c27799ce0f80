"""Small parts shared by the paper models.

`QuestionEncoder` is the word-embedding + BiLSTM question encoder that MSPAN (Guo et al., 2021) and
MASN (Seo et al., 2021) both use: GloVe-300 vectors fed to a bidirectional LSTM whose final forward
and backward states, concatenated, give the sentence vector, and whose per-word outputs give the
word features.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor, nn

__all__ = ["QuestionEncoder", "as_embedding_tensor", "run_lstm"]


def as_embedding_tensor(embeddings: np.ndarray | Tensor, *, vocab_size: int, embed_dim: int) -> Tensor:
    """Check and convert a pretrained word-vector matrix.

    Args:
        embeddings: (V, E) array or tensor, row ``i`` is the vector of token id ``i``.
        vocab_size: expected V.
        embed_dim: expected E.

    Returns:
        (V, E) float32 tensor (a copy; the caller's array is never aliased).

    Raises:
        ValueError: wrong rank or shape, or non-finite values.
    """
    matrix = torch.as_tensor(np.asarray(embeddings) if not isinstance(embeddings, Tensor) else embeddings)
    if matrix.dim() != 2:
        raise ValueError(
            f"word embeddings must be a (vocab_size, dim) matrix, got shape {tuple(matrix.shape)}"
        )
    if tuple(matrix.shape) != (vocab_size, embed_dim):
        raise ValueError(
            f"word embeddings have shape {tuple(matrix.shape)} but the model expects "
            f"({vocab_size}, {embed_dim}) = (vocab_size, word_dim); rebuild the vocabulary cache or set "
            f"word_dim to {matrix.shape[1]}"
        )
    matrix = matrix.detach().to(torch.float32).clone()
    if not torch.isfinite(matrix).all():
        raise ValueError("word embeddings contain NaN or infinite values")
    return matrix


def run_lstm(lstm: nn.LSTM, packed: nn.utils.rnn.PackedSequence):
    """``lstm(packed)``, in float32 under CPU autocast.

    CPU bf16 autocast sends LSTMs to oneDNN, whose bf16 LSTM primitive cannot be created on CPUs without
    native bf16 for batches whose sequences all have one length ("could not create a primitive
    descriptor"); the question encoder is a small share of any model's compute, so it stays in float32.
    """
    if packed.data.device.type == "cpu" and torch.is_autocast_enabled("cpu"):
        with torch.autocast("cpu", enabled=False):
            return lstm(packed.float())
    return lstm(packed)


class QuestionEncoder(nn.Module):
    """Word embedding followed by a multi-layer bidirectional LSTM.

    Args:
        vocab_size: number of token ids (id 0 is padding).
        embed_dim: word-vector size (300 for GloVe).
        hidden_dim: output size; each LSTM direction has ``hidden_dim // 2`` units.
        num_layers: stacked BiLSTM layers.
        dropout: dropout applied to the sentence vector and the word features.
        embeddings: optional (vocab_size, embed_dim) matrix to initialise the embedding from.
        freeze_embeddings: keep the embedding fixed during training.
        sentence_layer: the LSTM layer whose final states give the sentence vector (-1: the last;
            MSPAN's official code takes layer 0).

    Forward:
        tokens: (B, L) int64, 0-padded.
        lengths: (B,) int64 real lengths; a length of 0 (empty text) is read as one padding token.

    Returns:
        ``(words, sentence)``: words (B, L, hidden_dim), zeros at padded positions, and
        sentence (B, hidden_dim) = [final forward state; final backward state] of ``sentence_layer``.
    """

    def __init__(
        self,
        vocab_size: int,
        *,
        embed_dim: int = 300,
        hidden_dim: int = 512,
        num_layers: int = 1,
        dropout: float = 0.0,
        embeddings: np.ndarray | Tensor | None = None,
        freeze_embeddings: bool = False,
        sentence_layer: int = -1,
    ) -> None:
        super().__init__()
        if not -num_layers <= sentence_layer < num_layers:
            raise ValueError(f"sentence_layer must index one of the {num_layers} LSTM layers, "
                             f"got {sentence_layer}")
        if vocab_size < 1:
            raise ValueError(f"vocab_size must be >= 1, got {vocab_size}")
        if hidden_dim % 2:
            raise ValueError(f"hidden_dim must be even (two LSTM directions), got {hidden_dim}")
        self.embedding = nn.Embedding(vocab_size, embed_dim, padding_idx=0)
        if embeddings is not None:
            with torch.no_grad():
                self.embedding.weight.copy_(
                    as_embedding_tensor(embeddings, vocab_size=vocab_size, embed_dim=embed_dim)
                )
        self.embedding.weight.requires_grad_(not freeze_embeddings)
        self.lstm = nn.LSTM(
            embed_dim, hidden_dim // 2, num_layers=num_layers, batch_first=True, bidirectional=True
        )
        self.dropout = nn.Dropout(dropout)
        self.hidden_dim = hidden_dim
        self.sentence_layer = sentence_layer % num_layers

    def forward(self, tokens: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        if tokens.dim() != 2:
            raise ValueError(f"question tokens must be (B, L), got shape {tuple(tokens.shape)}")
        B, L = tokens.shape
        lengths = lengths.reshape(B).clamp(min=1, max=L).cpu()
        x = self.embedding(tokens)  # (B, L, E)
        packed = nn.utils.rnn.pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
        out, (h_n, _) = run_lstm(self.lstm, packed)  # h_n: (layers * 2, B, H/2)
        words, _ = nn.utils.rnn.pad_packed_sequence(out, batch_first=True, total_length=L)  # (B, L, H)
        top = 2 * self.sentence_layer
        sentence = torch.cat([h_n[top], h_n[top + 1]], dim=-1)  # (B, H): forward then backward state
        return self.dropout(words), self.dropout(sentence)
