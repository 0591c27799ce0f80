"""Ask a trained model about any video: load a self-contained checkpoint once, answer many questions.

::

    from train.answer import Answerer
    answerer = Answerer.from_checkpoint("RUN/checkpoints/best.pt")        # random-weight features: as is
    answerer = Answerer.from_checkpoint("best.pt", checkpoint_dir="weights/")  # pretrained backbones
    result = answerer.answer("clip.mp4", "what is the man riding ?")
    result.to_json()  # {"video", "question", "answers": [{"answer", "score"}, ...]} best first

A checkpoint written by ``vqa-train`` carries everything used here (``train.provenance``): the model
name and config, the task type, both vocabularies, the feature-normalisation statistics, the training
config and the feature set's provenance (name, resolved options, backbones with their weights sha256 or
``"random"``). The video goes through the extraction code path (``extract.featuresets``: the same
``decode`` -> ``infer`` -> ``finalize`` as ``vqa-extract``) with exactly those options and backbones;
pretrained backbone weights come from ``--backbone NAME=PATH``, ``--checkpoint-dir`` (by the recorded
file name) or the torch cache, and a file whose sha256 differs from the recorded one is refused.
Random-weight backbones are rebuilt from the recorded seed, so features, and answers, are reproduced.

Moment-retrieval models (CMIN; ``task_type == "moment"``) take a query instead of a question
(:meth:`Answerer.answer` with the sentence, ``--query`` on the command line). The clips go through the
checkpoint's standardisation, PCA projection and resampling (``train.moments.model_view``, as the
training run's ``MomentDataset``); the query's dependency edges come from the parser the training
queries were parsed with (``meta["query_parse"]``, ``pipelines.deps.new_query_parser``: the chain or
spaCy exactly; a run on the datasets' stored parses, which cannot be made for a new sentence, falls
back as ``pipelines.deps`` does and :attr:`Answerer.query_note` says so); the top moments are decoded
by ``train.losses.moment_predictions`` with the run's NMS threshold, in seconds of the video's decoded
duration (frames / fps).

The batch is built like training's (``train.data``: question tokens, features standardised with the
recorded statistics, ``QACollate``), from the feature keys of the model's registry entry. Every model
returns its attention as named entries of its output dict; :attr:`Answer.attention` keeps all of them
for ``--explain`` (``train/explain.py``).
"""

from __future__ import annotations

import errno
import json
import os
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import click
import numpy as np
import torch

from extract.backbones import RANDOM_SEED, resolve_weights
from extract.featuresets import FeatureOptions, FeatureSet, build_feature_set
from extract.shards import mentions_random_weights
from extract.video import Video, VideoDecodeError
from extract.weights import WeightsError, sha256_file
from models import get_model
from pipelines.deps import SpacyUnavailable, new_query_parser
from pipelines.text import encode_tokens, tokenize
from train.checkpoint import CheckpointError, load_checkpoint
from train.config import ConfigError, build_config
from train.data import QACollate, standardize, video_end
from train.losses import count_rounded, moment_predictions
from train.moments import (
    MomentCollate,
    MomentConfig,
    Projection,
    checkpoint_configs,
    encode_edges,
    model_view,
)
from train.provenance import CHECKPOINT_FORMAT, RANDOM_WEIGHTS_BANNER
from train.text_encoder import TextEncoderError, for_checkpoint

__all__ = [
    "Answer",
    "AnswerError",
    "Answerer",
    "BackboneMismatchError",
    "ImportedFeaturesError",
    "BadRequest",
    "OldCheckpointError",
    "VideoFeatures",
    "named_attention",
]

#: meta keys a checkpoint needs to answer questions on its own (see train.provenance.self_contained_meta)
REQUIRED_META = (
    "model_name",
    "task_type",
    "model_config",
    "train_config",
    "answer_vocab",
    "question_vocab",
    "provenance",
    "checkpoint_format",
    "feature_stats",
    "backbone_random_seed",
)
#: further meta keys of moment-retrieval checkpoints (the query parser and its label ids)
REQUIRED_MOMENT_META = ("query_parse",)
#: output-dict entries that are predictions, not attention
PREDICTION_KEYS = frozenset({"logits", "scores", "count", "loss", "aux_losses"})


class AnswerError(RuntimeError):
    """Bad input to vqa-answer (checkpoint, backbone file, video, question); the message says what to do."""


class OldCheckpointError(AnswerError):
    """A checkpoint written before checkpoints became self-contained."""


class BackboneMismatchError(AnswerError):
    """A backbone weight file whose sha256 is not the one the features were extracted with."""


@dataclass
class VideoFeatures:
    """One video through the checkpoint's feature set.

    Attributes:
        video: the path.
        features: the feature set's outputs as ``vqa-extract`` stores them (name -> array).
        frames: (K, S, S, 3) uint8 frames the model saw (for figures), one per time step where the
            set has one; None when the set exposes no frames.
        duration: seconds (frames / fps of the decoded stream); moment models only, else None.
    """

    video: str
    features: dict[str, np.ndarray]
    frames: np.ndarray | None = None
    duration: float | None = None


@dataclass
class Answer:
    """The answer to one question about one video.

    Attributes:
        video, question: as asked (``question`` is the query for moment models).
        task_type: ``"open"``, ``"mc"``, ``"count"`` or ``"moment"``.
        answers: best first; open: ``(answer, probability)`` of the top k; mc: ``(candidate, score)`` of
            every candidate, with ``candidate_index`` giving each one's position as given.
        count: the predicted count (rounded, clamped to 1..10 as in evaluation) and ``raw`` the
            regressed value.
        moments: best first ``(start_s, end_s, score)`` (score: the window's sigmoid confidence).
        duration: moment models: the video's duration in seconds (the moments lie in [0, duration]).
        attention: the model's named attention outputs for this question (arrays without batch axis).
        frames: the frames of :class:`VideoFeatures` (for ``--explain``).
        object_names: (T, M) names of the stored objects when the feature set names them (masn with
            ``--detector bottomup_r101_vg``: "<attribute> <class>"), else None (for ``--explain``).
        unknown_words: the words the model's vocabulary lacks (each read as ``<unk>``): ``question`` (or
            the query) -> words, ``candidates`` -> one list per candidate; empty when every word is known
            (and for transformer question encoders, which have no word vocabulary).
    """

    video: str
    question: str
    task_type: str
    answers: list[tuple[str, float]] = field(default_factory=list)
    candidate_index: list[int] = field(default_factory=list)
    count: int | None = None
    raw: float | None = None
    moments: list[tuple[float, float, float]] = field(default_factory=list)
    duration: float | None = None
    attention: dict[str, np.ndarray] = field(default_factory=dict)
    frames: np.ndarray | None = None
    features: dict[str, np.ndarray] = field(default_factory=dict)
    object_names: np.ndarray | None = None
    unknown_words: dict[str, Any] = field(default_factory=dict)

    def notes(self) -> list[str]:
        """One line per text with words the model does not know (what ``vqa-answer`` prints on stderr)."""
        words = self.unknown_words
        if not words:
            return []
        label = "query" if self.task_type == "moment" else "question"
        out = []
        if words.get(label):
            n, total = len(words[label]), words[f"{label}_words"]
            out.append(f"{n} of the {total} words of the {label} are not in the model's vocabulary "
                       f"({', '.join(words[label][:8])}): each is read as <unk>"
                       + ("; the answer does not depend on its words" if n == total else ""))
        cands = words.get("candidates") or []
        blind = [i for i, (unk, n) in enumerate(zip(cands, words.get("candidate_words", []), strict=False))
                 if unk and len(unk) == n]
        partly = sum(1 for c in cands if c)
        if partly:
            out.append(f"{partly} of {len(cands)} candidates have words not in the model's vocabulary"
                       + (f"; candidate(s) {', '.join(map(str, blind))} are made only of such words and "
                          f"score alike" if blind else ""))
        return out

    @property
    def prediction(self) -> Any:
        """What ``predictions_test.jsonl`` records: the answer word (open), the candidate index (mc), the
        rounded count (count), the best moment ``[start_s, end_s]`` rounded to ms as there (moment)."""
        if self.task_type == "open":
            return self.answers[0][0]
        if self.task_type == "mc":
            return self.candidate_index[0]
        if self.task_type == "count":
            return self.count
        return [round(float(self.moments[0][0]), 3), round(float(self.moments[0][1]), 3)]

    def to_json(self) -> dict[str, Any]:
        """``{"video", "question", "answers" | "count"}`` or ``{"video", "query", "moments"}`` (moment
        models) (the ``--json`` line)."""
        text_key = "query" if self.task_type == "moment" else "question"
        out: dict[str, Any] = {"video": self.video, text_key: self.question}
        if self.task_type == "open":
            out["answers"] = [{"answer": a, "score": _round(s)} for a, s in self.answers]
        elif self.task_type == "mc":
            out["answers"] = [
                {"answer": a, "score": _round(s), "index": i}
                for (a, s), i in zip(self.answers, self.candidate_index, strict=True)
            ]
        elif self.task_type == "count":
            out["count"], out["raw"] = self.count, _round(self.raw)
        else:
            out["moments"] = [
                {"start": _round(a), "end": _round(b), "score": _round(s)} for a, b, s in self.moments
            ]
        if self.unknown_words:
            out["unknown_words"] = {k: v for k, v in self.unknown_words.items() if not k.endswith("words")}
        return out


def _round(x: float | None) -> float | None:
    return None if x is None else float(f"{x:.6g}")


def _check_meta(meta: Mapping[str, Any], path: Path) -> None:
    if "converted_from" in meta:
        raise AnswerError(
            f"{path}: converted from an official {meta.get('model_name')} checkpoint; its features came from "
            f"the authors' own extraction, which it does not record, so vqa-answer cannot rebuild them for a "
            f"new video. Evaluate it on extracted features: vqa-train {meta.get('model_name')} --eval-only "
            f"--checkpoint {path} ..."
        )
    required = REQUIRED_META + (REQUIRED_MOMENT_META if meta.get("task_type") == "moment" else ())
    missing = [k for k in required if k not in meta]
    if missing:
        raise OldCheckpointError(
            f"{path}: this checkpoint was written before checkpoints became self-contained and lacks "
            f"{', '.join(missing)}; vqa-answer needs them. Retrain with this toolkit version (its best.pt "
            f"and "
            f"epoch checkpoints carry them), or evaluate the old one on extracted features with "
            f"`vqa-train MODEL --eval-only --checkpoint {path}`"
        )
    if int(meta["checkpoint_format"]) > CHECKPOINT_FORMAT:
        raise AnswerError(
            f"{path}: checkpoint format {meta['checkpoint_format']} is newer than this toolkit "
            f"reads ({CHECKPOINT_FORMAT}); update the toolkit"
        )


def _backbone_records(feature_prov: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """Network name -> its provenance entry (backbones of every role, plus e.g. a detector)."""
    found: dict[str, dict[str, Any]] = {}

    def walk(node: Any) -> None:
        if isinstance(node, Mapping):
            if "name" in node and "weights_sha256" in node:
                found[str(node["name"])] = dict(node)
                return
            for value in node.values():
                walk(value)

    walk(feature_prov.get("backbones", {}))
    walk({k: v for k, v in feature_prov.items() if k != "backbones"})
    return found


def resolve_backbone_files(
    feature_prov: Mapping[str, Any],
    *,
    backbones: Mapping[str, str | Path] | None = None,
    checkpoint_dir: str | Path | None = None,
    source: str = "the checkpoint",
) -> tuple[tuple[str, str], ...]:
    """The ``(network, weight file)`` pairs that reproduce the recorded pretrained backbones.

    Each network with recorded pretrained weights takes ``backbones[name]``, else
    ``checkpoint_dir / <recorded file name>``, else the file ``vqa-extract`` would find (torch cache).
    Its sha256 must equal the recorded one. Random-weight networks take no file.

    Raises:
        BackboneMismatchError: a file with another sha256 (the message names both hashes).
        AnswerError: no file found, or ``backbones`` names a network the features do not use.
    """
    records = _backbone_records(feature_prov)
    given = {k: Path(v) for k, v in (backbones or {}).items()}
    unknown = sorted(set(given) - set(records))
    if unknown:
        raise AnswerError(
            f"--backbone {unknown[0]}: the features of {source} use no network of that name "
            f"(they use {', '.join(sorted(records))})"
        )
    pairs = []
    for name, rec in sorted(records.items()):
        sha = rec["weights_sha256"]
        if sha == "random":
            if name in given:
                raise AnswerError(
                    f"--backbone {name}: {source} was trained on features from RANDOM {name} "
                    "weights; drop the option (they are rebuilt from the recorded seed)"
                )
            continue
        path = given.get(name)
        if path is None and checkpoint_dir is not None and rec.get("weights_file"):
            candidate = Path(checkpoint_dir) / rec["weights_file"]
            path = candidate if candidate.is_file() else None
        if path is None:
            try:
                path, _ = resolve_weights(name, weights="pretrained")
            except (WeightsError, KeyError, ValueError):
                path = None
        if path is None or not path.is_file():
            raise AnswerError(
                f"the features of {source} were extracted with {name} weights {rec.get('weights_file')} "
                f"(sha256 {sha}); give that file with --backbone {name}=PATH or --checkpoint-dir DIR"
                + (f" (not found: {path})" if path is not None else "")
            )
        actual = sha256_file(path)
        if actual != sha:
            raise BackboneMismatchError(
                f"{path}: sha256 {actual} is not the {name} weights the features of {source} were "
                f"extracted with (sha256 {sha}, file {rec.get('weights_file')}); give that exact file"
            )
        pairs.append((name, str(path)))
    return tuple(pairs)


class ImportedFeaturesError(AnswerError):
    """The checkpoint was trained on imported (released) features, which vqa-answer cannot recompute."""


def recompute_provenance(trained: Mapping[str, Any], features_like: str | Path | None, *, source: str
                         ) -> tuple[Mapping[str, Any], str | None]:
    """The feature provenance new videos are extracted by, and a note when it is not the training one's.

    A model trained on features this toolkit extracted recomputes them as recorded. A model trained on
    imported features (``vqa-extract import``: released by the authors, no backbone recorded) needs
    ``features_like``: a feature directory ``vqa-extract`` made whose backbones the user vouches reproduce
    the released features (e.g. ``--features cmin --motion c3d_sports1m`` for the ActivityNet C3D
    release, docs/reproduce.md). It must be an extraction of the same feature set with the same feature
    sizes; its backbones' weight files are then resolved and sha256-checked as usual.

    Raises:
        ImportedFeaturesError: imported features and no ``features_like`` (one line saying what to do).
        AnswerError: ``features_like`` unreadable, itself imported, or of another set or other sizes.
    """
    imported = trained.get("imported")
    if not imported:
        if features_like is not None:
            raise AnswerError(f"--features-like: {source} was trained on features this toolkit extracted; "
                              "they are recomputed as recorded, drop the option")
        return trained, None
    files = ", ".join(r.get("file") or str(r.get("directory")) for r in imported.get("files", {}).values())
    if features_like is None:
        raise ImportedFeaturesError(
            f"{source}: trained on features imported from {imported.get('format')} ({files}; "
            f"{imported.get('features')}), which vqa-answer cannot recompute for a new video; pass "
            "--features-like DIR, a feature directory vqa-extract made with backbones that reproduce them "
            "(docs/reproduce.md), or evaluate on imported features with vqa-train --eval-only")
    like = _extraction_like(Path(features_like), trained)
    nets = ", ".join(f"{r}={b.get('name')}" for r, b in sorted(like.get("backbones", {}).items()))
    return like, (f"features recomputed as {features_like} was extracted ({nets}), standing in for the "
                  f"{imported.get('format')} features the model was trained on")


def _extraction_like(directory: Path, trained: Mapping[str, Any]) -> Mapping[str, Any]:
    """The provenance of the extraction in ``directory``, checked against the features a model trained on."""
    from extract.manifest import load_manifest
    from extract.shards import ManifestError

    try:
        manifest = load_manifest(directory)
    except ManifestError as exc:
        raise AnswerError(f"--features-like: {exc}") from None
    like = manifest.get("provenance", {})
    if like.get("imported"):
        raise AnswerError(f"--features-like {directory}: imported features too; give a directory vqa-extract "
                          "extracted, whose backbones can run on a new video")
    if manifest["feature_set"] != trained.get("feature_set"):
        raise AnswerError(f"--features-like {directory}: feature set {manifest['feature_set']!r}, but the "
                          f"model was trained on {trained.get('feature_set')!r} features")
    want = {k: v.get("shape") for k, v in (trained.get("outputs") or {}).items()}
    got = {k: v.get("shape") for k, v in manifest["outputs"].items()}
    if want != got:
        raise AnswerError(f"--features-like {directory}: outputs {got} differ from the {want} the model was "
                          "trained on (a backbone of another size, or another PCA)")
    return like


def rebuild_feature_set(
    feature_prov: Mapping[str, Any], *, files: tuple[tuple[str, str], ...], device: str, seed: int
) -> FeatureSet:
    """The recorded feature set with its resolved options (precision included), the given weight files and
    ``device``.

    Raises:
        AnswerError: the record names an unknown set, or random weights from another seed than this
            toolkit's (they could not be reproduced).
    """
    options = dict(feature_prov.get("options") or {})
    name = feature_prov.get("feature_set")
    if not options or not name:
        raise OldCheckpointError(
            "the checkpoint's feature provenance records no feature set options; "
            "retrain on features extracted with this toolkit"
        )
    if options.get("weights") == "random" and int(seed) != RANDOM_SEED:
        raise AnswerError(
            f"the features were made with random backbone weights from seed {seed}, but this "
            f"toolkit initialises random backbones from seed {RANDOM_SEED}: cannot reproduce them"
        )
    options["checkpoints"] = files
    # the precision the features were extracted in (older records: bf16 autocast ran on CUDA only)
    on_cuda = str(options.get("device", "cpu")).startswith("cuda")
    options.setdefault("precision", "bf16" if on_cuda else "fp32")
    options["device"] = device
    known = set(FeatureOptions.__dataclass_fields__)
    try:
        fs = build_feature_set(name, FeatureOptions(**{k: v for k, v in options.items() if k in known}))
        older = {k: v for k, v in fs.legacy_options().items()  # recorded before the option existed
                 if k not in options and getattr(fs.options, k) != v}
        if older:
            fs = build_feature_set(name, replace(fs.options, **older))
        return fs
    except (KeyError, ValueError) as exc:
        raise AnswerError(f"cannot rebuild feature set {name!r} from the checkpoint: {exc}") from exc


def named_attention(out: Mapping[str, Any], row: int = 0, batch_size: int = 1) -> dict[str, np.ndarray]:
    """The model's named attention outputs of batch row ``row`` (arrays without the batch axis).

    An entry whose first axis is not ``batch_size`` is shared by the batch (e.g. CMIN's ``windows``,
    (N, 2)) and kept whole.
    """
    return {
        k: (a[row] if a.shape[0] == batch_size else a)
        for k, v in out.items()
        if k not in PREDICTION_KEYS and isinstance(v, torch.Tensor) and v.dim() >= 1
        for a in (v.detach().float().cpu().numpy(),)
    }


def _display_frames(chunks: Sequence[Mapping[str, np.ndarray]]) -> np.ndarray | None:
    """One uint8 frame per time step: ``frames`` chunks as they are, ``clips`` by their middle frame,
    MASN's ``app_frames`` (whole frames squashed to S x S, so normalised boxes map onto them)."""
    parts = []
    for c in chunks:
        if "frames" in c and c["frames"].ndim == 4:
            parts.append(c["frames"])
        elif "app_frames" in c and c["app_frames"].ndim == 4:
            parts.append(c["app_frames"])
        elif "clips" in c and c["clips"].ndim == 5:
            parts.append(c["clips"][:, c["clips"].shape[1] // 2])
        else:
            return None
    return np.concatenate(parts) if parts else None


class Answerer:
    """A trained model and the feature extraction it was trained on; answers questions about videos.

    Build it with :meth:`from_checkpoint`. Not thread-safe (one model, one feature set).
    """

    def __init__(
        self,
        model: torch.nn.Module,
        meta: Mapping[str, Any],
        feature_set: FeatureSet,
        *,
        path: Path,
        device: torch.device,
        text_encoder: Any = None,
    ) -> None:
        self.model, self.meta, self.feature_set = model.eval(), dict(meta), feature_set
        self.text_encoder = text_encoder  # train.text_encoder.LoadedTextEncoder of transformer models
        self.path, self.device = path, device
        self.task_type: str = meta["task_type"]
        self.answer_vocab: list[str] = list(meta["answer_vocab"])
        self.index = {tok: i for i, tok in enumerate(meta["question_vocab"])}
        self.max_len = meta.get("max_question_len")
        self.subtitles = bool(meta.get("subtitles"))  # trained on questions with subtitle text (How2QA)
        self.stats = {k: (v["mean"].numpy(), v["std"].numpy()) for k, v in meta["feature_stats"].items()}
        entry = get_model(meta["model_name"])
        self.feature_keys = tuple(entry.feature_keys) or tuple(feature_set.outputs)
        ragged = tuple(n for n, s in feature_set.outputs.items() if s.shape and s.shape[0] is None)
        self.collate = QACollate(
            ragged, answer_dtype=torch.float32 if self.task_type == "count" else torch.int64
        )
        self.query_note: str | None = None
        self.features_note: str | None = None  # features recomputed by --features-like's extraction
        if self.task_type == "moment":
            self._init_moments()

    def _init_moments(self) -> None:
        """Moment models: the batch, the clips' view, the decoding and the query parser of the run."""
        train_cfg = json.loads(self.meta["train_config"])
        view = build_config(MomentConfig, checkpoint_configs(self.meta, source=str(self.path))[1],
                            section="moment")  # the clips' view: moment_config, or older model_config keys
        self.collate = MomentCollate()
        self.projection = Projection.from_meta(self.meta)
        self.num_steps, self.resample, self.center = view.num_steps, view.resample, view.center_clips
        self.nms_threshold = float(train_cfg.get("moment_nms", 0.5))
        parse = self.meta["query_parse"]
        self.dep_labels = {str(k): int(v) for k, v in parse["labels"].items()}
        try:
            self.parse_query, self.query_note = new_query_parser(str(parse["parser"]))
        except SpacyUnavailable as exc:
            raise AnswerError(
                f"{self.path}: the run's queries were parsed with {parse['parser']}, needed for new queries "
                f"too: {exc}"
            ) from None

    @classmethod
    def from_checkpoint(
        cls,
        path: str | Path,
        *,
        backbones: Mapping[str, str | Path] | None = None,
        checkpoint_dir: str | Path | None = None,
        device: str = "cpu",
        text_encoder: str | Path | None = None,
        features_like: str | Path | None = None,
    ) -> Answerer:
        """Load a self-contained checkpoint (``best.pt`` or ``epoch-NNNN.pt``) with ``weights_only=True``.

        Args:
            path: the checkpoint.
            backbones: network name -> weight file (``--backbone NAME=PATH``).
            checkpoint_dir: a directory holding the recorded weight files by name (``--checkpoint-dir``).
            device: ``"cpu"``, ``"cuda"``, ... for the model and the backbones.
            text_encoder: transformer question encoders: the checkpoint directory (``--text-encoder``;
                default the recorded one); its files' sha256 must be the recorded ones.
            features_like: models trained on imported (released) features: a feature directory
                ``vqa-extract`` made whose extraction stands in for them (``--features-like``; see
                :func:`recompute_provenance`).

        Raises:
            OldCheckpointError: a checkpoint from before self-contained checkpoints (names what is missing).
            BackboneMismatchError: a weight file with another sha256 than recorded.
            AnswerError, CheckpointError: other bad input, with what to do.
        """
        path = Path(path)
        ckpt = load_checkpoint(path)
        meta = ckpt.get("meta") or {}
        _check_meta(meta, path)
        try:
            entry = get_model(meta["model_name"])
        except KeyError as exc:
            raise AnswerError(f"{path}: {exc.args[0]}") from None
        try:
            values = checkpoint_configs(meta, source=str(path))[0]  # older CMIN ones: data keys moved
            cfg = build_config(entry.config_cls, values, section="model")
        except ConfigError as exc:
            raise AnswerError(str(exc)) from None
        try:
            text = for_checkpoint(cfg, meta, text_encoder, source=str(path))
        except TextEncoderError as exc:
            raise AnswerError(str(exc)) from None
        model = entry.build(
            cfg,
            vocab_size=len(meta["question_vocab"]),
            num_answers=len(meta["answer_vocab"]),
            task_type=meta["task_type"],
            **({"text_encoder": text.model} if text is not None else {}),
        )
        try:
            model.load_state_dict(ckpt["model"])
        except RuntimeError as exc:
            raise CheckpointError(
                f"{path}: the weights do not fit model {meta['model_name']!r}: {str(exc).splitlines()[0]}"
            ) from None
        fprov, note = recompute_provenance(meta["provenance"]["features"].get("provenance") or {},
                                           features_like, source=str(path))
        files = resolve_backbone_files(
            fprov, backbones=backbones, checkpoint_dir=checkpoint_dir, source=str(path)
        )
        fs = rebuild_feature_set(fprov, files=files, device=device, seed=meta["backbone_random_seed"])
        dev = torch.device(device)
        answerer = cls(model.to(dev), meta, fs, path=path, device=dev, text_encoder=text)
        answerer.features_note = note
        return answerer

    # -- properties ---------------------------------------------------------------------------------

    @property
    def random_weights(self) -> bool:
        """The features (training's and ours) come from RANDOM backbone weights: not research results."""
        return bool(self.meta["provenance"]["features"].get("random_weights")) or mentions_random_weights(
            self.meta["provenance"]["features"].get("provenance", {})
        )

    @property
    def random_weights_banner(self) -> str:
        return RANDOM_WEIGHTS_BANNER.replace(
            "these features were extracted with", "this model's features (and this answer's) come from"
        )

    def describe(self) -> str:
        """One line: model, task, feature set and backbones."""
        m, fs = self.meta, self.feature_set
        nets = ", ".join(f"{r}={fs.backbone_name(r)}" for r in fs.roles)
        weights = "RANDOM weights" if self.random_weights else "pretrained weights (sha256 checked)"
        task = f"{m.get('dataset')}{'/' + m['task'] if m.get('task') else ''}"
        return (f"{self.path}: {m['model_name']} trained on {task} ({self.task_type}); "
                f"features {fs.name} ({nets}, {weights})")

    # -- features -----------------------------------------------------------------------------------

    def extract(self, video: str | Path) -> VideoFeatures:
        """Run the recorded feature set on one video (decode -> infer -> finalize, as ``vqa-extract``).

        Raises:
            AnswerError: the video is missing or cannot be decoded (the message names the file).
        """
        path = Path(video)
        if not path.is_file():
            raise AnswerError(f"{path}: no such video file")
        fs = self.feature_set
        try:
            chunks = list(fs.decode(path.stem, path))
            partials = fs.infer(chunks)
            features = fs.finalize(partials)
            duration = None
            if self.task_type == "moment":
                with Video(path) as v:
                    duration = float(v.info.duration)
        except VideoDecodeError as exc:
            raise AnswerError(f"{path}: cannot decode the video ({exc.reason})") from None
        for key, arr in features.items():
            if arr.dtype.kind == "f" and not np.isfinite(arr).all():
                raise AnswerError(f"{path}: feature {key!r} came out NaN or infinite; the video is unusable")
        return VideoFeatures(str(video), features, _display_frames(chunks), duration)

    # -- questions ----------------------------------------------------------------------------------

    def unknown_words(self, question: str, candidates: Sequence[str] | None = None) -> dict[str, Any]:
        """The words of ``question`` (and ``candidates``) outside the model's vocabulary, as the model reads
        them (tokenized, truncated to the run's length); ``{}`` when there are none.

        Keys: ``question`` (``query`` for moment models) and ``question_words`` (the number of words read);
        with candidates also ``candidates`` (per candidate) and ``candidate_words``.
        """
        if self.text_encoder is not None:  # sub-word tokens: no word is unknown
            return {}
        label = "query" if self.task_type == "moment" else "question"

        def unknown(text: str) -> tuple[list[str], int]:
            tokens = tokenize(text)[: self.max_len] if self.max_len else tokenize(text)
            return [t for t in tokens if t not in self.index], len(tokens)

        words, total = unknown(question)
        found: dict[str, Any] = {label: words, f"{label}_words": total}
        if candidates:
            per = [unknown(c) for c in candidates]
            found["candidates"], found["candidate_words"] = [u for u, _ in per], [n for _, n in per]
        has_any = words or any(found.get("candidates", []))
        return found if has_any else {}

    def _check_segment(self, feats: VideoFeatures, segment: tuple[float, float] | None) -> None:
        """A segment must overlap the video (its frames' times); else the model would look at an arbitrary
        nearest frame."""
        times = feats.features.get("frame_times")
        if segment is None or times is None or len(times) == 0:
            return
        end = video_end(np.asarray(times, dtype=np.float64))
        if segment[0] >= end:
            raise AnswerError(f"segment {segment[0]:g}-{segment[1]:g} s starts after the end of "
                              f"{feats.video} (it ends by {end:.2f} s); give a segment inside the video")

    def _moment_item(self, feats: VideoFeatures, query: str) -> dict[str, Any]:
        """One ``MomentDataset`` item for a new query (no ground truth: moment (0, 0))."""
        tokens = tokenize(query)
        ids, lengths = encode_tokens([tokens], self.index, self.max_len)
        qlen = max(int(lengths[0]), 1)
        stats = self.stats.get("clips")
        clips = model_view(feats.features["clips"], num_steps=self.num_steps, resample=self.resample,
                           projection=self.projection, feature_stats=stats, center=self.center)
        return {
            "qid": "q",
            "video_id": Path(feats.video).stem,
            "question": torch.from_numpy(ids[0][:qlen]),
            "question_len": qlen,
            "edges": torch.from_numpy(encode_edges(self.parse_query(tokens), qlen, self.dep_labels)),
            "clips": torch.from_numpy(np.ascontiguousarray(clips)),
            "duration": float(feats.duration),
            "moment": (0.0, 0.0),
        }

    def _item(
        self,
        feats: VideoFeatures,
        question: str,
        candidates: Sequence[str] | None,
        segment: tuple[float, float] | None = None,
        subtitle: str | None = None,
    ) -> dict[str, Any]:
        if subtitle is not None and not self.subtitles:
            raise AnswerError("this model was not trained with subtitles; drop the subtitle")
        if self.task_type == "moment":
            if candidates or segment:
                raise AnswerError("this is a moment-retrieval model: it takes a query, no candidates/segment")
            return self._moment_item(feats, question)
        ids, lengths = encode_tokens([tokenize(question)], self.index, self.max_len)
        item: dict[str, Any] = {
            "qid": "q",
            "video_id": Path(feats.video).stem,
            "qtype": "",
            "answer_text": "",
            "question": torch.from_numpy(ids[0]),
            "question_len": int(lengths[0]),
            "answer": 0.0 if self.task_type == "count" else 0,
        }
        if self.task_type == "mc":
            if not candidates:
                raise AnswerError(
                    'this is a multiple-choice model: give the candidates (--candidates "a|b|c")'
                )
            cids, clen = encode_tokens([tokenize(c) for c in candidates], self.index, self.max_len)
            item["candidates"], item["candidates_len"] = torch.from_numpy(cids), torch.from_numpy(clen)
        elif candidates:
            raise AnswerError(f"this is a {self.task_type} model: it takes no candidates")
        if self.text_encoder is not None:  # as train.data.QADataset's text_tokens
            sub = (subtitle or "") if self.subtitles else None
            tokens = self.text_encoder.tokens(question, candidates, sub)
            item.update({k: torch.from_numpy(v) for k, v in tokens.items()})
        elif self.subtitles:  # as train.data.QADataset (none given: no subtitle text, length 0)
            sids, slen = encode_tokens([tokenize(subtitle or "")], self.index, allow_empty=True)
            item["subtitle"], item["subtitle_len"] = torch.from_numpy(sids[0]), int(slen[0])
        if segment is not None:  # as train.data.QADataset (How2QA's ts); models that use none ignore it
            item["segment"] = torch.tensor([float(segment[0]), float(segment[1])], dtype=torch.float32)
        for key in self.feature_keys:
            arr = np.asarray(feats.features[key])
            if arr.dtype.kind == "f":
                arr = standardize(feats.features, key, self.stats)  # as train.data.QADataset
            item[key] = torch.from_numpy(np.ascontiguousarray(arr))
        return item

    def answer(
        self,
        video: str | Path | VideoFeatures,
        question: str,
        *,
        candidates: Sequence[str] | None = None,
        segment: tuple[float, float] | None = None,
        top_k: int = 5,
        subtitle: str | None = None,
    ) -> Answer:
        """Answer one question (``video`` a path, or the :meth:`extract` result to reuse it).

        ``segment``: the question's (start, end) in seconds when the training questions had one (How2QA's
        ``ts``: SiaSamRea samples its clips inside it); a How2QA model asked without one looks at the
        whole video. ``subtitle``: the subtitle text of that segment, for models trained with subtitles
        (How2QA); without one such a model reads no subtitle text.

        Raises:
            AnswerError: bad video, or candidates missing (mc) / given (other task types).
        """
        feats = video if isinstance(video, VideoFeatures) else self.extract(video)
        if not question or not question.strip():
            raise AnswerError("the question is empty")
        self._check_segment(feats, segment)
        batch = self.collate([self._item(feats, question, candidates, segment, subtitle)])
        batch = {k: v.to(self.device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
        with torch.no_grad():
            out = self.model(batch)
        result = Answer(feats.video, question, self.task_type, frames=feats.frames, features=feats.features,
                        duration=feats.duration, unknown_words=self.unknown_words(question, candidates))
        result.attention = named_attention(out)
        result.object_names = self.feature_set.object_names(feats.features)
        if self.task_type == "open":
            probs = torch.softmax(out["logits"].float()[0], dim=0).cpu()
            top = torch.topk(probs, min(top_k, probs.numel()))
            result.answers = [
                (self.answer_vocab[i], float(p))
                for p, i in zip(top.values, top.indices.tolist(), strict=True)
            ]
        elif self.task_type == "mc":
            scores = out["scores"].float()[0].cpu()
            order = torch.argsort(scores, descending=True, stable=True).tolist()
            result.answers = [(candidates[i], float(scores[i])) for i in order]
            result.candidate_index = order
        elif self.task_type == "count":
            raw = out["count"].float().reshape(-1)[:1].cpu()
            result.raw, result.count = float(raw[0]), int(count_rounded(raw)[0])
        elif self.task_type == "moment":
            (moments, scores), = moment_predictions(
                out, durations=batch["duration"], nms_threshold=self.nms_threshold, top_k=top_k
            )
            result.moments = [
                (float(a), float(b), float(c))
                for (a, b), c in zip(moments.tolist(), scores.tolist(), strict=True)
            ]
        else:
            raise AnswerError(f"task type {self.task_type!r} is not supported by vqa-answer")
        return result

    def answer_many(self, requests: Iterable[Mapping[str, Any]], *, top_k: int = 5) -> list[dict[str, Any]]:
        """Answer many questions, extracting each video once; a failing video gives error lines.

        Args:
            requests: dicts with ``video``, ``question`` (or ``query``) and optional ``candidates``
                (list, or one ``"a|b|c"`` string), ``segment`` ([start, end] seconds) and ``subtitle``
                (text; models trained with subtitles); other keys (e.g. ``id``) are copied to the output.
                A :class:`BadRequest` (a malformed line of :func:`read_requests`) gives its error line.

        Returns:
            One JSON-able dict per request, in order: :meth:`Answer.to_json` plus the copied keys, or
            ``{"video", "question" (moment models: "query"), "error"}``, or ``{"line", "error"}``.
        """
        requests = list(requests)
        by_video: dict[str, list[int]] = {}
        results: list[dict[str, Any] | None] = [None] * len(requests)
        for i, req in enumerate(requests):
            if isinstance(req, BadRequest):  # a malformed line: its error line, in its place
                results[i] = {"line": req.line, "error": req.error}
                continue
            by_video.setdefault(str(req.get("video", "")), []).append(i)
        text_key = "query" if self.task_type == "moment" else "question"
        for video, rows in by_video.items():
            try:
                feats = self.extract(video) if video else None
                error = None if video else 'no "video" given'
            except AnswerError as exc:
                feats, error = None, str(exc)
            for i in rows:
                req = requests[i]
                question = req.get("question", req.get("query", ""))
                extra = {
                    k: v
                    for k, v in req.items()
                    if k not in ("video", "question", "query", "candidates", "segment", "subtitle")
                }
                if feats is None:
                    results[i] = {"video": video, text_key: question, "error": error, **extra}
                    continue
                try:
                    cands = req.get("candidates")
                    if isinstance(cands, str):
                        cands = [c.strip() for c in cands.split("|")]
                    seg = _parse_segment(req.get("segment"), '"segment"')
                    sub = req.get("subtitle")
                    answer = self.answer(feats, str(question), candidates=cands, segment=seg, top_k=top_k,
                                         subtitle=None if sub is None else str(sub))
                    results[i] = {**answer.to_json(), **extra}
                except AnswerError as exc:
                    results[i] = {"video": video, text_key: question, "error": str(exc), **extra}
        return [r for r in results if r is not None]


def parse_backbones(items: Sequence[str]) -> dict[str, str]:
    """``["resnet152=/w/r152.pth", ...]`` -> dict (``--backbone NAME=PATH``)."""
    out = {}
    for item in items:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            raise AnswerError(
                f"--backbone {item!r}: expected NAME=PATH, e.g. resnet152=weights/resnet152.pth"
            )
        out[name.strip()] = path.strip()
    return out


@dataclass(frozen=True)
class BadRequest:
    """A line of a ``--questions`` file that is not a question: its number and what is wrong (named)."""

    line: int
    error: str


def read_requests(path: str | Path) -> list[dict[str, Any] | BadRequest]:
    """The lines of a ``--questions`` JSONL file (blank lines skipped), a malformed line as a
    :class:`BadRequest` in its place (the other lines are still answered).

    Raises:
        AnswerError: the file cannot be read at all.
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise AnswerError(f"{path}: cannot read the questions file ({exc.strerror})") from None
    out: list[dict[str, Any] | BadRequest] = []
    for n, data in enumerate(raw.split(b"\n"), 1):
        try:
            line = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            out.append(BadRequest(n, f"{path}:{n}: not UTF-8 text (byte {exc.start + 1})"))
            continue
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            out.append(BadRequest(n, f"{path}:{n}: not JSON ({exc.msg}); expected one object per line like "
                                     '{"video": "clip.mp4", "question": "what is the man riding ?"}'))
            continue
        if not isinstance(obj, dict) or "video" not in obj or not ("question" in obj or "query" in obj):
            out.append(BadRequest(n, f'{path}:{n}: expected an object with "video" and "question" '
                                     '(or "query")'))
            continue
        out.append(obj)
    return out


def format_answer(result: Answer) -> str:
    """The human-readable table of one answer."""
    label = "query" if result.task_type == "moment" else "question"
    lines = [f"video: {result.video}", f"{label}: {result.question}"]
    if result.task_type == "open":
        lines.append("  rank  probability  answer")
        lines += [f"  {r:>4}  {p:>11.4f}  {a}" for r, (a, p) in enumerate(result.answers, 1)]
    elif result.task_type == "mc":
        lines.append("  rank  score      candidate")
        lines += [
            f"  {r:>4}  {s:>9.4f}  [{i}] {a}"
            for r, ((a, s), i) in enumerate(zip(result.answers, result.candidate_index, strict=True), 1)
        ]
    elif result.task_type == "count":
        lines.append(f"  count: {result.count}  (regressed {result.raw:.3f})")
    else:
        lines[0] += f"  ({result.duration:.2f} s)" if result.duration is not None else ""
        lines.append("  rank  start (s)  end (s)  score")
        lines += [f"  {r:>4}  {a:>9.2f}  {b:>7.2f}  {s:.4f}" for r, (a, b, s) in enumerate(result.moments, 1)]
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------- command line
_EPILOG = """\b
Examples:
  vqa-answer --checkpoint RUN/checkpoints/best.pt --video clip.mp4 --question "what is the man riding ?"
  vqa-answer --checkpoint best.pt --video clip.mp4 --question "what does he do ?" --candidates "run|jump|sit"
  vqa-answer --checkpoint CMIN_RUN/checkpoints/best.pt --video v.mp4 --query "a man opens the door" --json
  vqa-answer --checkpoint best.pt --questions questions.jsonl --output answers.jsonl
  vqa-answer --checkpoint best.pt --video clip.mp4 --question "..." --explain figure.png
A --questions line: {"video": "clip.mp4", "question": "...", "candidates": ["a", "b"] (multiple choice),
"segment": [start, end] (seconds; How2QA), "subtitle": "..." (How2QA models trained with subtitles)}
or {"video": "clip.mp4", "query": "..."} (moment retrieval)
(relative video paths are read from the current directory; other keys such as "id" are copied).
"""


def _parse_segment(text: Any, option: str = "--ground-truth") -> tuple[float, float] | None:
    """``"START,END"`` (or a [start, end] list, batch lines) in seconds -> (start, end); None -> None."""
    if text is None:
        return None
    try:
        parts = text.replace(",", " ").split() if isinstance(text, str) else list(text)
        start, end = (float(x) for x in parts)
    except (ValueError, TypeError):
        raise AnswerError(f"{option} {text!r}: expected START,END in seconds, e.g. 3.5,9") from None
    if not end >= start >= 0:
        raise AnswerError(f"{option} {text!r}: expected 0 <= START <= END (seconds)")
    return start, end


def _cli(
    checkpoint,
    video,
    question,
    candidates,
    query,
    as_json,
    questions,
    output,
    checkpoint_dir,
    backbone,
    device,
    top_k,
    explain,
    ground_truth,
    segment,
    text_encoder=None,
    features_like=None,
    subtitle=None,
) -> int:
    import sys

    from pipelines.atomic import atomic_path

    if questions is None and (video is None or (question is None and query is None)):
        raise AnswerError("give --video and --question (or --query), or a --questions FILE.jsonl")
    if questions is not None and (video or question or query):
        raise AnswerError("--questions FILE answers the file's lines; drop --video/--question/--query")
    for option, target in (("--output", output), ("--explain", explain)):
        if target is not None:  # before any work: a whole batch is not lost to an unwritable output
            check_writable(Path(target), option)
    requests = read_requests(questions) if questions is not None else None
    answerer = Answerer.from_checkpoint(
        checkpoint, backbones=parse_backbones(backbone), checkpoint_dir=checkpoint_dir, device=device,
        text_encoder=text_encoder, features_like=features_like,
    )
    if answerer.random_weights:
        click.echo(answerer.random_weights_banner, err=True)
    click.echo(answerer.describe(), err=True)
    if answerer.query_note:
        click.echo(f"note: {answerer.query_note}", err=True)
    if answerer.features_note:
        click.echo(f"note: {answerer.features_note}", err=True)
    if requests is not None:
        results = answerer.answer_many(requests, top_k=top_k)
        text = "".join(json.dumps(r) + "\n" for r in results)
        if output:
            try:
                with atomic_path(Path(output)) as tmp:
                    tmp.write_text(text, encoding="utf-8")
            except OSError as exc:  # e.g. the disk filled during the work: the answers go to stdout
                sys.stdout.write(text)
                raise AnswerError(_cannot_write(Path(output), "--output", exc)
                                  + "; the answers were written to stdout instead") from None
        else:
            sys.stdout.write(text)
        failed = [r for r in results if "error" in r]
        click.echo(
            f"{len(results) - len(failed)} answered, {len(failed)} failed"
            + (f" (e.g. {failed[0]['error']})" if failed else "")
            + (f"; answers in {output}" if output else ""),
            err=True,
        )
        return 3 if failed else 0
    cands = [c.strip() for c in candidates.split("|")] if candidates else None
    text = query if query is not None else question
    if query is not None and answerer.task_type != "moment":
        raise AnswerError(
            f"--query is for moment-retrieval models; this one is {answerer.task_type}: use --question"
        )
    if query is None and answerer.task_type == "moment":
        raise AnswerError('this is a moment-retrieval model: give the sentence to find with --query "..."')
    result = answerer.answer(
        video, text, candidates=cands, segment=_parse_segment(segment, "--segment"), top_k=top_k,
        subtitle=subtitle,
    )
    for note in result.notes():
        click.echo(f"note: {note}", err=True)
    if as_json:
        line = result.to_json()
        if answerer.random_weights:
            line["random_weights"] = True
        click.echo(json.dumps(line))
    else:
        click.echo(format_answer(result))
    if explain:
        from train.explain import render_explanation

        try:
            render_explanation(result, answerer, explain, ground_truth=_parse_segment(ground_truth))
        except OSError as exc:
            raise AnswerError(_cannot_write(Path(explain), "--explain", exc)) from None
        click.echo(f"explanation figure: {explain}", err=True)
    return 0


def _cannot_write(path: Path, option: str, exc: OSError) -> str:
    """``cannot write OPTION PATH: <reason>; <what to do>`` for an output that failed."""
    reason = os.strerror(exc.errno) if exc.errno else str(exc)
    advice = {
        errno.ENOSPC: f"free some space or give {option} another path",
        errno.EDQUOT: f"the disk quota is exhausted; free some space or give {option} another path",
        errno.EROFS: f"the file system is read-only; give {option} a path on another one",
        errno.EACCES: f"check the permissions of {path.parent} or give {option} another path",
        errno.EPERM: f"check the permissions of {path.parent} or give {option} another path",
    }.get(exc.errno, f"give {option} another path")
    return f"cannot write {option} {path}: {reason}; {advice}"


def check_writable(path: Path, option: str) -> None:
    """Refuse, before any work, an output file that cannot be written: a directory, a missing or read-only
    directory, a full disk (a 64 KiB probe file is written, synced and removed next to ``path``).

    Raises:
        AnswerError: naming ``option`` and ``path`` and what to do.
    """
    if path.is_dir():
        raise AnswerError(f"{option} {path} is a directory; give a file name")
    parent = path.parent
    if parent.exists() and not parent.is_dir():
        raise AnswerError(f"cannot write {option} {path}: {parent} is not a directory; give {option} "
                          "another path")
    try:
        parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=parent, prefix=f".tmp-{path.name}.") as probe:
            probe.write(bytes(64 << 10))
            probe.flush()
            os.fsync(probe.fileno())
    except OSError as exc:
        raise AnswerError(_cannot_write(path, option, exc)) from None


def main(argv: Sequence[str] | None = None) -> None:
    """``vqa-answer`` (also ``python -m train.answer``); exit statuses as ``pipelines.errors``: 0, 1 user
    error, 2 usage, 3 batch mode with some questions unanswered (their error lines are written), 130."""
    from pipelines.errors import run_cli

    @click.command(
        context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110}, epilog=_EPILOG
    )
    @click.option(
        "--checkpoint",
        required=True,
        type=click.Path(dir_okay=False, path_type=Path),
        help="A self-contained checkpoint (RUN/checkpoints/best.pt or epoch-NNNN.pt).",
    )
    @click.option("--video", type=click.Path(path_type=Path), help="The video file.")
    @click.option("--question", help="The question (open-ended, multiple choice, count).")
    @click.option("--candidates", help='Multiple choice: the candidates, "a|b|c|d|e".')
    @click.option("--query", help="Moment-retrieval models: the sentence to find in the video.")
    @click.option(
        "--segment",
        metavar="START,END",
        help="The question's segment in seconds, for models trained on questions with one (How2QA's ts).",
    )
    @click.option(
        "--subtitle",
        metavar="TEXT",
        help="The subtitle text of the question's segment, for models trained with subtitles (How2QA).",
    )
    @click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of the table.")
    @click.option(
        "--questions",
        type=click.Path(dir_okay=False, path_type=Path),
        help='Batch mode: a JSONL file, one {"video", "question"|"query", "candidates"?} per line.',
    )
    @click.option(
        "--output",
        type=click.Path(dir_okay=False, path_type=Path),
        help="Batch mode: write the answers' JSONL here (default: stdout).",
    )
    @click.option(
        "--checkpoint-dir",
        type=click.Path(file_okay=False, path_type=Path),
        help="Directory holding the backbone weight files recorded in the checkpoint (by file name).",
    )
    @click.option(
        "--backbone",
        multiple=True,
        metavar="NAME=PATH",
        help="A backbone's weight file (repeatable); its sha256 must be the recorded one.",
    )
    @click.option(
        "--text-encoder",
        type=click.Path(path_type=Path),
        help="Models with a transformer question encoder: its local checkpoint directory (default: the "
        "recorded one); its files' sha256 must be the recorded ones.",
    )
    @click.option(
        "--features-like",
        type=click.Path(file_okay=False, path_type=Path),
        help="Models trained on imported (released) features: a feature directory vqa-extract made with "
        "backbones that reproduce them; new videos are extracted as it was (docs/reproduce.md).",
    )
    @click.option("--device", default="cpu", show_default=True, help="cpu, cuda, cuda:1, ...")
    @click.option(
        "--top-k",
        default=5,
        show_default=True,
        type=click.IntRange(1),
        help="Open-ended: how many answers to show; moment retrieval: how many moments.",
    )
    @click.option(
        "--explain",
        type=click.Path(dir_okay=False, path_type=Path),
        help="Write a figure of what the model attended to (PNG).",
    )
    @click.option(
        "--ground-truth",
        metavar="START,END",
        help="Moment models with --explain: the true moment in seconds, drawn on the timeline.",
    )
    def command(**kwargs):
        """Answer a question about a video with a trained model (features recomputed from the raw video)."""
        return _cli(**kwargs)

    run_cli(command, argv, prog_name="vqa-answer", user_errors=_user_errors,
            interrupted_hint="nothing was written; re-run the command")


def _user_errors() -> tuple[type[BaseException], ...]:
    from train.checkpoint import CheckpointError as _CkptError

    return (AnswerError, _CkptError)


if __name__ == "__main__":
    main()
