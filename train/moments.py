"""Moment-retrieval data for the shared loop: PCA projection, resampling, dependency edges, dataset, collate.

The ``moment`` task type (CMIN) reads encoded queries (``pipelines.text.prepare_moments``), their
dependency edges (``pipelines.deps.dependency_edges``) and the ``cmin`` clip features. A batch
(:class:`MomentCollate`) holds:

========================  ====================  ===============================================
key                       shape / dtype         meaning
========================  ====================  ===============================================
``qid``, ``video_id``     list[str]             query ids, video ids
``question``              (B, L) int64          query token ids, 0 = padding
``question_len``          (B,) int64            real lengths
``edges``                 (B, L, L) int64       ``[b, head, dependent] = label id + 1``, 0 = no edge
``clips``                 (B, T, D) float32     PCA-projected clip features resampled to T steps
``clips_mask``            (B, T) bool           valid steps (all True with ``resample="always"``)
``duration``              (B,) float32          video duration in seconds
``moment``                (B, 2) float32        ground truth (start, end) in seconds
========================  ====================  ===============================================

PCA (the paper's PCA-500): fitted on the clips of the training split's videos only (covariance of the
centred clips, top eigenvectors), and cached as ``<cache_dir>/pca-<key>.npz`` where the key hashes
the feature directory's manifest (feature set, provenance, shard plan), the training video ids, the
number of components and the feature scaling, so new features never reuse an old projection.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from pipelines.atomic import atomic_path
from pipelines.deps import Edge

__all__ = [
    "MomentCollate",
    "MomentDataset",
    "Projection",
    "best_prior_moments",
    "dependency_label_index",
    "encode_edges",
    "fit_pca",
    "load_or_fit_pca",
    "model_view",
    "random_moments",
    "resample_steps",
]

log = logging.getLogger("train")


class Projection:
    """A fitted PCA: ``(x - mean) @ components`` ((D,) mean, (D, k) components), float32."""

    def __init__(self, mean: np.ndarray, components: np.ndarray) -> None:
        self.mean = np.asarray(mean, dtype=np.float32)
        self.components = np.asarray(components, dtype=np.float32)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return (x.astype(np.float32, copy=False) - self.mean) @ self.components  # (T, k)

    @classmethod
    def from_meta(cls, meta: Mapping[str, Any], key: str = "clips") -> Projection | None:
        """The projection a self-contained checkpoint's ``meta["feature_projection"]`` carries for
        ``key`` (``train.provenance.self_contained_meta``), or None when the run used none."""
        entry = (meta.get("feature_projection") or {}).get(key)
        if entry is None:
            return None
        return cls(np.asarray(entry["mean"]), np.asarray(entry["components"]))


def resample_steps(x: np.ndarray, num_steps: int, mode: str = "always") -> np.ndarray:
    """Resample (L, D) clip features to ``num_steps`` steps of equal duration.

    Step i covers the fraction [i / T, (i + 1) / T) of the video: longer videos are mean-pooled over the
    clips in that span, shorter ones repeat the clip under it (``mode="always"``, as CMIN's code does for
    every video) or stay as they are for the collate to pad and mask (``mode="longer"``).
    """
    L = x.shape[0]
    if L == num_steps or (L < num_steps and mode == "longer"):
        return x
    if L < num_steps:
        return x[(np.arange(num_steps) * L) // num_steps]
    edges = (np.arange(num_steps + 1) * L) // num_steps  # bins of >= 1 clip
    sums = np.add.reduceat(x.astype(np.float64), edges[:-1], axis=0)
    return (sums / np.diff(edges)[:, None]).astype(np.float32)


def _prepared(x: np.ndarray, stats: tuple[np.ndarray, np.ndarray] | None, center: bool) -> np.ndarray:
    """(L, D) clips standardised with ``stats`` (when given), then minus their own mean when ``center``."""
    if stats is not None:
        x = (x - stats[0]) / stats[1]
    return x - x.mean(0, keepdims=True) if center and len(x) else x


def model_view(x: np.ndarray, *, num_steps: int, resample: str = "always",
               projection: Projection | None = None,
               feature_stats: tuple[np.ndarray, np.ndarray] | None = None,
               center: bool = False) -> np.ndarray:
    """The model's view of one video's (L, D) clip features: standardised with ``feature_stats`` (when
    given), minus the video's mean clip (``center``, CMIN's ``center_clips``), projected (PCA, when
    given), resampled (:func:`resample_steps`); (T, k) float32.

    The one place a training run (:class:`MomentDataset`) and ``vqa-answer`` turn clips into model input.
    """
    x = _prepared(np.asarray(x, dtype=np.float32), feature_stats, center)
    if projection is not None:
        x = projection(x)
    return resample_steps(x, num_steps, resample)


def fit_pca(reader: Any, video_ids: Sequence[str], dim: int, *, key: str = "clips",
            stats: tuple[np.ndarray, np.ndarray] | None = None, whiten: bool = False,
            center: bool = False) -> Projection:
    """PCA of the clips of ``video_ids`` (each distinct video once, sorted; float64 accumulation).

    The clips are prepared as :func:`model_view` prepares them (``stats``, ``center``). ``whiten`` scales
    every component to unit variance on these clips.

    Raises:
        ValueError: fewer clips or channels than components.
    """
    total, outer, count = None, None, 0
    for vid in sorted(set(video_ids)):
        x = _prepared(np.asarray(reader[vid][key], dtype=np.float64), stats, center)
        total = x.sum(0) if total is None else total + x.sum(0)
        outer = x.T @ x if outer is None else outer + x.T @ x
        count += x.shape[0]
    if total is None or dim > min(count, total.shape[0]):
        channels = 0 if total is None else total.shape[0]
        raise ValueError(f"PCA to {dim} components needs at least {dim} training clips and channels (have "
                         f"{count} clips of {channels} channels); set model.pca_dim lower or null")
    mean = total / count
    cov = outer / count - np.outer(mean, mean)
    values, vectors = np.linalg.eigh(cov)  # ascending
    comps = vectors[:, ::-1][:, :dim]
    comps = comps * np.where(comps[np.abs(comps).argmax(0), np.arange(dim)] < 0, -1.0, 1.0)  # sign-fixed
    if whiten:
        comps = comps / np.sqrt(np.maximum(values[::-1][:dim], 1e-12))
    return Projection(mean, comps)


def load_or_fit_pca(reader: Any, video_ids: Sequence[str], dim: int, *, cache_dir: Path,
                    stats: tuple[np.ndarray, np.ndarray] | None = None, whiten: bool = False,
                    center: bool = False) -> Projection:
    """:func:`fit_pca`, cached under a key that changes with the features, the videos and the settings."""
    manifest = Path(reader.out_dir) / "manifest.json"
    h = hashlib.sha256(manifest.read_bytes())
    settings = {"ids": sorted(set(video_ids)), "dim": dim, "whiten": whiten, "v": 1}
    if center:  # absent when off, so the caches of earlier runs keep their keys
        settings["center"] = True
    h.update(json.dumps(settings).encode())
    if stats is not None:
        h.update(stats[0].tobytes() + stats[1].tobytes())
    path = Path(cache_dir) / f"pca-{h.hexdigest()[:20]}.npz"
    if path.is_file():
        with np.load(path, allow_pickle=False) as z:
            log.info("PCA projection from cache %s", path)
            return Projection(z["mean"], z["components"])
    proj = fit_pca(reader, video_ids, dim, stats=stats, whiten=whiten, center=center)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            np.savez(fh, mean=proj.mean, components=proj.components)
    log.info("PCA to %d components fitted on %d training videos; cached in %s", dim, len(set(video_ids)),
             path)
    return proj


def dependency_label_index(train_edges: Sequence[Sequence[Edge]], num_labels: int) -> dict[str, int]:
    """Label -> id from the training queries, most frequent first; ids 1..num_labels-1 (0 = unknown)."""
    counts = Counter(lab for edges in train_edges for _, _, lab in edges)
    ranked = sorted(counts, key=lambda lab: (-counts[lab], lab))[: max(num_labels - 1, 0)]
    return {lab: i + 1 for i, lab in enumerate(ranked)}


def encode_edges(edges: Sequence[Edge], length: int, labels: Mapping[str, int]) -> np.ndarray:
    """(length, length) int64 with ``[head, dependent] = label id + 1``; edges past ``length`` dropped."""
    out = np.zeros((length, length), dtype=np.int64)
    for head, dep, lab in edges:
        if head < length and dep < length and head != dep:
            out[head, dep] = labels.get(lab, 0) + 1
    return out


class MomentDataset(Dataset):
    """The queries of one split with their edges and their videos' resampled, projected clips.

    Args:
        split: an ``EncodedMoments``.
        edges: the split's dependency edges, one list per query (same order as ``split.qids``).
        labels: dependency label -> id (:func:`dependency_label_index`).
        reader: a ``FeatureReader`` (or mapping id -> {"clips": (L, D)}).
        num_steps, resample: see :func:`resample_steps`.
        projection: the PCA (None = features as they are); ``feature_stats``: per-channel (mean, std)
            applied first (``train.feature_norm=standardize``); ``center``: see :func:`model_view`.
        indices: rows of the split to use.
    """

    def __init__(self, split: Any, edges: Sequence[Sequence[Edge]], labels: Mapping[str, int], reader: Any, *,
                 num_steps: int, resample: str = "always", projection: Projection | None = None,
                 feature_stats: tuple[np.ndarray, np.ndarray] | None = None, center: bool = False,
                 indices: Sequence[int] | np.ndarray | None = None) -> None:
        self.split, self.edges, self.labels, self.reader = split, edges, dict(labels), reader
        self.num_steps, self.resample = num_steps, resample
        self.projection, self.feature_stats, self.center = projection, feature_stats, center
        self.indices = np.asarray(np.arange(len(split)) if indices is None else indices, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.indices)

    @property
    def qids(self) -> list[str]:
        return [self.split.qids[i] for i in self.indices]

    def clips(self, video_id: str) -> np.ndarray:
        """The model's view of a video: standardised, projected, resampled (T, D) float32."""
        return model_view(self.reader[video_id]["clips"], num_steps=self.num_steps, resample=self.resample,
                          projection=self.projection, feature_stats=self.feature_stats, center=self.center)

    def __getitem__(self, index: int) -> dict[str, Any]:
        s = self.split
        i = int(self.indices[index])
        qlen = max(int(s.query_len[i]), 1)
        return {
            "qid": s.qids[i],
            "video_id": s.video_ids[i],
            "question": torch.as_tensor(np.asarray(s.queries[i][:qlen], dtype=np.int64)),
            "question_len": qlen,
            "edges": torch.from_numpy(encode_edges(self.edges[i], qlen, self.labels)),
            "clips": torch.from_numpy(np.ascontiguousarray(self.clips(s.video_ids[i]))),
            "duration": float(s.duration_s[i]),
            "moment": (float(s.start_s[i]), float(s.end_s[i])),
        }


class MomentCollate:
    """Pads :class:`MomentDataset` items into the moment batch (see the module docstring)."""

    def __call__(self, items: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        if not items:
            raise ValueError("cannot collate an empty batch")
        B = len(items)
        L = max(int(it["question"].shape[0]) for it in items)
        T = max(int(it["clips"].shape[0]) for it in items)
        D = int(items[0]["clips"].shape[1])
        question = torch.zeros(B, L, dtype=torch.int64)
        edges = torch.zeros(B, L, L, dtype=torch.int64)
        clips = torch.zeros(B, T, D, dtype=torch.float32)
        mask = torch.zeros(B, T, dtype=torch.bool)
        for b, it in enumerate(items):
            n, t = it["question"].shape[0], it["clips"].shape[0]
            question[b, :n] = it["question"]
            edges[b, :n, :n] = it["edges"]
            clips[b, :t] = it["clips"]
            mask[b, :t] = True
        return {
            "qid": [it["qid"] for it in items],
            "video_id": [it["video_id"] for it in items],
            "question": question,
            "question_len": torch.tensor([it["question_len"] for it in items], dtype=torch.int64),
            "edges": edges,
            "clips": clips,
            "clips_mask": mask,
            "duration": torch.tensor([it["duration"] for it in items], dtype=torch.float32),
            "moment": torch.tensor([it["moment"] for it in items], dtype=torch.float32),
        }


def random_moments(durations: np.ndarray, *, k: int = 5, seed: int = 0) -> list[np.ndarray]:
    """The random-window baseline: k windows per query with uniform random ends (fixed seed), seconds."""
    rng = np.random.default_rng(seed)
    out = []
    for d in durations:
        ends = np.sort(rng.uniform(0, 1, size=(k, 2)), axis=1)
        out.append(ends * float(d))
    return out


def best_prior_moments(start_s: np.ndarray, end_s: np.ndarray, duration_s: np.ndarray, *, k: int = 5,
                       bins: int = 20) -> tuple[np.ndarray, np.ndarray]:
    """The best-prior baseline: the training split's k most frequent normalised moments.

    Normalised (start, end) / duration are rounded to a 1/``bins`` grid and counted.

    Returns:
        ``(windows (k, 2) normalised, frequencies (k,))``, most frequent first.
    """
    s = np.clip(np.round(start_s / duration_s * bins), 0, bins).astype(int)
    e = np.clip(np.round(end_s / duration_s * bins), 0, bins).astype(int)
    e = np.maximum(e, s + 1)
    counts = Counter(zip(s.tolist(), e.tolist(), strict=True))
    top = sorted(counts, key=lambda se: (-counts[se], se))[:k]
    freq = np.array([counts[t] for t in top], dtype=np.float64) / max(len(s), 1)
    return np.array(top, dtype=np.float64) / bins, freq
