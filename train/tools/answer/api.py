"""The :class:`Answerer`: a self-contained checkpoint, the feature set rebuilt from its provenance
(``extract.rebuild``) and the batch its training run built, answering questions about new videos."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from extract.featuresets import FeatureSet
from extract.rebuild import (
    UnrecordedOptionsError,
    rebuild_feature_set,
    recompute_provenance,
    resolve_backbone_files,
)
from extract.shards import mentions_random_weights
from extract.video import Video, VideoDecodeError
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
from train.tools.answer import frames as answer_frames
from train.tools.answer.batch import BadRequest, parse_segment
from train.tools.answer.results import (
    Answer,
    AnswerError,
    OldCheckpointError,
    VideoFeatures,
    display_frames,
    named_attention,
)

__all__ = ["REQUIRED_META", "REQUIRED_MOMENT_META", "Answerer", "check_meta"]

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


def check_meta(meta: Mapping[str, Any], path: Path) -> None:
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
        self.frames = isinstance(feature_set, answer_frames.FrameInput)  # end to end: frames, not features
        self.feature_keys = () if self.frames else tuple(entry.feature_keys) or tuple(feature_set.outputs)
        ragged = tuple(n for n, s in feature_set.outputs.items() if s.shape and s.shape[0] is None)
        self.collate = QACollate(
            ragged, answer_dtype=torch.float32 if self.task_type == "count" else torch.int64
        )
        if self.frames:
            self.collate = feature_set.collate(self.collate.answer_dtype)
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
                ``extract.rebuild.recompute_provenance``).

        Raises:
            OldCheckpointError: a checkpoint from before self-contained checkpoints (names what is missing).
            extract.rebuild.BackboneMismatchError: a weight file with another sha256 than recorded.
            extract.rebuild.ImportedFeaturesError: imported features and no ``features_like``.
            AnswerError, extract.rebuild.RebuildError, CheckpointError: other bad input, with what to do.
        """
        path = Path(path)
        ckpt = load_checkpoint(path)
        meta = ckpt.get("meta") or {}
        check_meta(meta, path)
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
        frames = answer_frames.uses_frames(cfg)  # end to end: the backbone is part of the weights
        model = entry.build(
            cfg,
            vocab_size=len(meta["question_vocab"]),
            num_answers=len(meta["answer_vocab"]),
            task_type=meta["task_type"],
            **({"text_encoder": text.model} if text is not None else {}),
            **(answer_frames.model_inputs(cfg)[0] if frames else {}),
        )
        try:
            model.load_state_dict(ckpt["model"])
        except RuntimeError as exc:
            raise CheckpointError(
                f"{path}: the weights do not fit model {meta['model_name']!r}: {str(exc).splitlines()[0]}"
            ) from None
        if frames:
            dev = torch.device(device)
            return cls(model.to(dev), meta, answer_frames.FrameInput(cfg), path=path, device=dev,
                       text_encoder=text)
        fprov, note = recompute_provenance(meta["provenance"]["features"].get("provenance") or {},
                                           features_like, source=str(path))
        files = resolve_backbone_files(
            fprov, backbones=backbones, checkpoint_dir=checkpoint_dir, source=str(path)
        )
        try:
            fs = rebuild_feature_set(fprov, files=files, device=device, seed=meta["backbone_random_seed"])
        except UnrecordedOptionsError as exc:  # a record from before the options were recorded
            raise OldCheckpointError(str(exc)) from None
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
        if self.frames:
            return fs.extract(path)
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
        return VideoFeatures(str(video), features, display_frames(chunks), duration)

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
        if self.frames:  # the question's evaluation clips, read as validation reads them
            item.update(self.feature_set.clips(feats, segment))
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
                    seg = parse_segment(req.get("segment"), '"segment"')
                    sub = req.get("subtitle")
                    answer = self.answer(feats, str(question), candidates=cands, segment=seg, top_k=top_k,
                                         subtitle=None if sub is None else str(sub))
                    results[i] = {**answer.to_json(), **extra}
                except AnswerError as exc:
                    results[i] = {"video": video, text_key: question, "error": str(exc), **extra}
        return [r for r in results if r is not None]

