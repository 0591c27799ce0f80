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
``duration``              (B,) float64          video duration in seconds
``moment``                (B, 2) float64        ground truth (start, end) in seconds (float64: the
                                                official step rule truncates seconds * steps / duration)
========================  ====================  ===============================================

Settings: :class:`MomentConfig`, the ``moment:`` section of a run's config (``--set moment.KEY=VALUE``):
how the clips become the model's input (PCA, centring, steps) and how the windows are trained (labels,
regression weight, normalisation, ground truth). They are not the network's (``models.cmin.CMINConfig``);
configs and checkpoints written before they moved carry them as ``model.*`` keys, which
:func:`split_legacy_keys` maps.

PCA (the paper's PCA-500): fitted on the clips of the training split's videos only (covariance of the
centred clips, top eigenvectors), and cached as ``<cache_dir>/pca-<key>.npz`` where the key hashes
the feature directory's manifest (feature set, provenance, shard plan), the training video ids, the
number of components and the feature scaling, so new features never reuse an old projection.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch.utils.data import Dataset

from extract.manifest import fingerprint
from pipelines.atomic import atomic_path
from pipelines.deps import Edge
from train.config import ConfigError, build_config
from train.data import batch_tensor, to_float32

__all__ = [
    "LEGACY_MODEL_KEYS",
    "MomentCollate",
    "MomentConfig",
    "MomentDataset",
    "Projection",
    "best_prior_moments",
    "checkpoint_configs",
    "checkpoint_model_config",
    "dependency_label_index",
    "encode_edges",
    "fill_video_dim",
    "fit_pca",
    "load_or_fit_pca",
    "model_view",
    "moment_item",
    "random_moments",
    "resample_steps",
    "split_legacy_keys",
    "upgrade_sections",
    "video_dim",
]

log = logging.getLogger("train")


@dataclass(frozen=True)
class MomentConfig:
    """Moment retrieval's data preparation and loss: the ``moment:`` section (``--set moment.KEY=VALUE``).

    Defaults reproduce the published numbers: the paper's PCA-500, the official code's 200 steps, labels,
    regression weight, loss normalisation and ground truth.

    Attributes:
        pca_dim: PCA components fitted on the training split's features (500, the paper's PCA-500); the
            size of the model's input (``model.video_dim``); None = no PCA, the features' own size.
        pca_whiten: also scale each component to unit variance on the training split (off: the paper's
            plain PCA).
        center_clips: subtract each video's mean clip feature (over its own clips, after the
            standardisation, before the PCA), so that the model sees how each step differs from the rest of
            its video. Not in the paper nor in the official code (off by default). The demo turns it on: its
            random-weight features are dominated by each video's static content.
        num_steps: T, every video resampled to this many steps (200, official).
        resample: always (official: mean-pool longer and repeat shorter videos to exactly T) or longer
            (pool only longer videos; shorter ones are zero-padded and masked).
        label_min_ratio: alignment labels below this fraction of the best IoU are zeroed (0.3: the slides'
            and the official code's rule).
        reg_weight: weight of the boundary regression (1e-3, official).
        align_norm: all (official: the alignment BCE averaged over every window of the batch, invalid ones
            counting 0) or valid (averaged over the valid windows only: about twice the weight on
            ActivityNet Captions, where about half the windows reach outside the video).
        gt_rule: the ground truth the loss trains towards: official (the steps the moment's start and
            end fall in, inclusive, as the official data loader computes it) or continuous (the moment
            itself in fractional steps).
    """

    pca_dim: int | None = 500
    pca_whiten: bool = False
    center_clips: bool = False
    num_steps: int = 200
    resample: Literal["always", "longer"] = "always"
    label_min_ratio: float = 0.3
    reg_weight: float = 1e-3
    align_norm: Literal["all", "valid"] = "all"
    gt_rule: Literal["official", "continuous"] = "official"

    def __post_init__(self) -> None:
        def bad(name: str, why: str) -> ConfigError:
            return ConfigError(f"moment.{name}={getattr(self, name)!r} is invalid: {why}")

        if isinstance(self.num_steps, bool) or self.num_steps < 1:
            raise bad("num_steps", "must be an integer >= 1")
        if self.pca_dim is not None and self.pca_dim < 1:
            raise bad("pca_dim", "must be >= 1 or null")
        for name, choices in (("resample", ("always", "longer")), ("align_norm", ("all", "valid")),
                              ("gt_rule", ("official", "continuous"))):
            if getattr(self, name) not in choices:
                raise bad(name, f"choose {' or '.join(choices)}")
        if not 0.0 <= self.label_min_ratio <= 1.0:
            raise bad("label_min_ratio", "must be in [0, 1]")
        if not (math.isfinite(self.reg_weight) and self.reg_weight >= 0):
            raise bad("reg_weight", "must be >= 0")

    def loss_settings(self) -> dict[str, Any]:
        """The keyword arguments of ``train.tasks.moment_losses.moment_loss``."""
        return {"label_min_ratio": self.label_min_ratio, "reg_weight": self.reg_weight,
                "align_norm": self.align_norm, "gt_rule": self.gt_rule}


#: CMIN ``model.*`` keys that moved to the ``moment`` section (older config.yaml files and checkpoints)
LEGACY_MODEL_KEYS = ("pca_dim", "pca_whiten", "center_clips", "num_steps", "resample", "label_min_ratio",
                     "reg_weight")


def split_legacy_keys(model: Mapping[str, Any], *, source: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """Model values written before the data and loss settings moved -> ``(model, moment)`` values.

    A partial section (a YAML file, ``--set model.pca_dim=64``) only has its moved keys renamed. A complete
    one (a run's ``config.yaml`` or a checkpoint's ``model_config`` from before: every moved key present)
    is that run as it ran: ``model.video_dim`` from its ``pca_dim`` (or ``clips_dim``), its offsets on the
    windows themselves (``model.official_boxes: false``) and the loss it trained with
    (``align_norm: valid``, ``gt_rule: continuous``).

    Raises:
        ConfigError: a complete section with ``gcn_edge_gates`` on (those scalar gates were replaced by the
            official per-dimension gate; such a checkpoint cannot be loaded).
    """
    model = dict(model)
    moment = {k: model.pop(k) for k in LEGACY_MODEL_KEYS if k in model}
    if len(moment) < len(LEGACY_MODEL_KEYS):
        return model, moment
    clips_dim = model.pop("clips_dim", None)
    if "video_dim" not in model and (moment["pca_dim"] or clips_dim):
        model["video_dim"] = moment["pca_dim"] or clips_dim
    model.setdefault("official_boxes", False)  # its offsets refine the windows, valid inside [0, T]
    moment.update(align_norm="valid", gt_rule="continuous")
    if model.get("gcn_edge_gates"):
        raise ConfigError(f"{source}: trained with CMIN's earlier scalar edge gates (model.gcn_edge_gates), "
                          "which the official per-dimension gate replaced; retrain it with this version")
    return model, moment


def upgrade_sections(sections: Mapping[str, Any], *, source: str) -> dict[str, Any]:
    """A config's sections with the moved ``model.*`` keys in a ``moment`` section (see
    :func:`split_legacy_keys`); other keys and sections unchanged.

    Raises:
        ConfigError: the same key given both ways.
    """
    out = dict(sections)
    model, moved = split_legacy_keys(out.get("model") or {}, source=source)
    if not moved:
        return out
    given = dict(out.get("moment") or {})
    both = sorted(set(moved) & set(given))
    if both:
        raise ConfigError(f"{source}: {', '.join(both)} given both as model.* (the older spelling) and "
                          f"moment.*; keep the moment.* ones")
    out["model"], out["moment"] = model, {**moved, **given}
    return out


def video_dim(cfg: MomentConfig, clips_dim: int) -> int:
    """The clip size the model reads: the PCA's ``pca_dim``, or the features' ``clips_dim`` without PCA."""
    return cfg.pca_dim if cfg.pca_dim is not None else clips_dim


def fill_video_dim(values: Mapping[str, Any], cfg: MomentConfig, clips_dim: int) -> dict[str, Any]:
    """The model values with ``video_dim`` set from the data settings (:func:`video_dim`).

    Raises:
        ConfigError: an explicit ``model.video_dim`` that contradicts them.
    """
    dim, out = video_dim(cfg, clips_dim), dict(values)
    if "video_dim" in out and out["video_dim"] != dim:
        raise ConfigError(f"model.video_dim={out['video_dim']} but the model reads {dim}-d clips "
                          f"(moment.pca_dim={cfg.pca_dim}, features of size {clips_dim}); drop the setting")
    out["video_dim"] = dim
    return out


def checkpoint_configs(meta: Mapping[str, Any], *, source: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """A checkpoint's ``(model, moment)`` values: its ``moment_config``, or, from a checkpoint written
    before the move, the ``model_config`` keys :func:`split_legacy_keys` moves."""
    model = json.loads(meta.get("model_config", "{}"))
    if "moment_config" in meta:
        return model, json.loads(meta["moment_config"])
    return split_legacy_keys(model, source=source)


def checkpoint_model_config(meta: Mapping[str, Any], config_cls: type, *, source: str) -> Any:
    """The model config a checkpoint was trained with (``--eval-only`` and ``vqa-answer`` alike; older
    CMIN checkpoints' data keys moved out, :func:`checkpoint_configs`).

    Raises:
        ConfigError: a value the config class refuses (the message names ``source``'s section).
    """
    return build_config(config_cls, checkpoint_configs(meta, source=source)[0], section="model")


class Projection:
    """A fitted PCA: ``(x - mean) @ components`` ((D,) mean, (D, k) components), float32."""

    def __init__(self, mean: np.ndarray, components: np.ndarray) -> None:
        self.mean = np.asarray(mean, dtype=np.float32)
        self.components = np.array(components, dtype=np.float32, order="C")  # writable, for torch

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """(T, D) -> (T, k). The product runs in torch, which a DataLoader worker limits to one thread;
        NumPy's BLAS would start a thread per core in every worker (2 workers on 2 cores ran at 0.7x of
        1 worker, docs/benchmarks.md "Training data path")."""
        centred = np.ascontiguousarray(to_float32(np.asarray(x)) - self.mean)  # (T, D)
        return (torch.from_numpy(centred) @ torch.from_numpy(self.components)).numpy()  # (T, k)

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
    x = _prepared(to_float32(np.asarray(x)), feature_stats, center)
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
                         f"{count} clips of {channels} channels); set moment.pca_dim lower or null")
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
    """:func:`fit_pca`, cached under a key that changes with the features, the videos and the settings.

    The features are keyed by the feature directory's fingerprint (``extract.manifest.fingerprint``, the one
    a run's provenance records): a re-extracted shard changes it, a manifest rewrite that changes no feature
    (a run record, the counts) does not. Caches keyed by the manifest's bytes (before "v": 2) are not found
    again and are fitted anew, never reused.
    """
    h = hashlib.sha256(fingerprint(reader.manifest).encode())
    settings = {"ids": sorted(set(video_ids)), "dim": dim, "whiten": whiten, "v": 2}
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
        return moment_item(qid=s.qids[i], video_id=s.video_ids[i], query=s.queries[i],
                           query_len=int(s.query_len[i]), edges=self.edges[i], labels=self.labels,
                           clips=self.clips(s.video_ids[i]),
                           duration=float(s.duration_s[i]), moment=(float(s.start_s[i]), float(s.end_s[i])))


def moment_item(*, qid: str, video_id: str, query: np.ndarray, query_len: int, edges: Sequence[Edge],
                labels: Mapping[str, int], clips: np.ndarray, duration: float,
                moment: tuple[float, float] = (0.0, 0.0)) -> dict[str, Any]:
    """One query's item of the moment batch: :class:`MomentDataset`'s and ``vqa-answer``'s new queries
    (``train.tasks.moment``; no ground truth: moment (0, 0)) are both built by it.

    Args:
        query: (L,) token ids, trimmed to ``query_len`` (at least one); edges: its dependency edges.
        clips: the model's view of the video (:func:`model_view`), (T, D) float32.
    """
    qlen = max(query_len, 1)
    return {
        "qid": qid,
        "video_id": video_id,
        "question": torch.as_tensor(np.asarray(query[:qlen], dtype=np.int64)),
        "question_len": qlen,
        "edges": torch.from_numpy(encode_edges(edges, qlen, labels)),
        "clips": torch.from_numpy(np.ascontiguousarray(clips)),
        "duration": float(duration),
        "moment": moment,
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
        clips = batch_tensor((B, T, D), torch.float32).zero_()  # shared memory in a DataLoader worker
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
            "duration": torch.tensor([it["duration"] for it in items], dtype=torch.float64),
            "moment": torch.tensor([it["moment"] for it in items], dtype=torch.float64),
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
