"""The :class:`Answerer`: a self-contained checkpoint, the feature set rebuilt from its provenance
(``extract.rebuild``) and the batch its training run built, answering questions about new videos."""

from __future__ import annotations

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
from pipelines.text import tokenize
from train.checkpoint import CheckpointError, load_checkpoint
from train.config import ConfigError
from train.data import video_end
from train.moments import checkpoint_model_config
from train.provenance import CHECKPOINT_FORMAT, RANDOM_WEIGHTS_BANNER
from train.recipes import get_recipe
from train.tasks import TASKS, ItemError, get_task
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

__all__ = ["REQUIRED_META", "Answerer", "check_meta"]

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


def check_meta(meta: Mapping[str, Any], path: Path) -> None:
    if "converted_from" in meta:
        raise AnswerError(
            f"{path}: converted from an official {meta.get('model_name')} checkpoint; its features came from "
            f"the authors' own extraction, which it does not record, so vqa-answer cannot rebuild them for a "
            f"new video. Evaluate it on extracted features: vqa-train {meta.get('model_name')} --eval-only "
            f"--checkpoint {path} ..."
        )
    kind = TASKS.get(meta.get("task_type"))  # its own keys besides (moment retrieval: the query parser)
    required = REQUIRED_META + (kind.required_meta if kind is not None else ())
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
        try:
            self.kind = get_task(self.task_type)
        except KeyError as exc:
            raise AnswerError(f"{path}: {exc.args[0]}; this toolkit's vqa-answer cannot answer it") from None
        self.answer_vocab: list[str] = list(meta["answer_vocab"])
        entry = get_model(meta["model_name"])
        self.frames = isinstance(feature_set, answer_frames.FrameInput)  # end to end: frames, not features
        feature_keys = () if self.frames else tuple(entry.feature_keys) or tuple(feature_set.outputs)
        try:  # how the run read its questions and videos: vocabulary, standardisation, ...
            self.view = self.kind.answer_view(meta, source=str(path), feature_keys=feature_keys,
                                              text_encoder=text_encoder)
        except ItemError as exc:
            raise AnswerError(str(exc)) from None
        ragged = tuple(n for n, s in feature_set.outputs.items() if s.shape and s.shape[0] is None)
        self.collate = self.kind.answer_collate(ragged)
        if self.frames:  # the kind's batch plus the clips' frames
            self.collate = feature_set.collate(self.collate.answer_dtype)
        self.query_note: str | None = self.view.note
        self.features_note: str | None = None  # features recomputed by --features-like's extraction

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
            cfg = checkpoint_model_config(meta, entry.config_cls, source=str(path))
        except ConfigError as exc:
            raise AnswerError(str(exc)) from None
        try:
            reading = get_recipe(meta["model_name"]).text_reading(cfg)  # transformer or word ids
            text = for_checkpoint(reading, meta, text_encoder, source=str(path))
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
    def subtitles(self) -> bool:
        """Trained on questions with subtitle text (How2QA)."""
        return bool(self.meta.get("subtitles"))

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
            if self.kind.reads_duration:
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
        label, index, max_len = self.kind.text_key, self.view.index, self.view.max_len

        def unknown(text: str) -> tuple[list[str], int]:
            tokens = tokenize(text)[:max_len] if max_len else tokenize(text)
            return [t for t in tokens if t not in index], len(tokens)

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

    def _item(self, feats: VideoFeatures, question: str, candidates: Sequence[str] | None,
              segment: tuple[float, float] | None = None, subtitle: str | None = None) -> dict[str, Any]:
        """The item of one question, built by the task kind as its training dataset builds items."""
        try:
            item = self.kind.new_item(self.view, feats.features, Path(feats.video).stem, question,
                                      candidates=candidates, segment=segment, subtitle=subtitle,
                                      duration=feats.duration)
        except ItemError as exc:
            raise AnswerError(str(exc)) from None
        if self.frames:  # the question's evaluation clips, read as validation reads them
            item.update(self.feature_set.clips(feats, segment))
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
        for name, value in self.kind.decode_answer(out, batch, self.view, candidates=candidates,
                                                   top_k=top_k).items():
            setattr(result, name, value)
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
        text_key = self.kind.text_key
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

