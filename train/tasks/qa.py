"""Question answering: open-ended (a class of the answer vocabulary), multiple choice (one of C candidates)
and count (a regressed number). Its text (``prepare_qa``), datasets (``train.data.QADataset``: val held out
of train when the dataset has none; questions without features, with a segment after their video or, for
open-ended training, an answer outside the vocabulary dropped and counted), batches, losses, predictions
and metrics (``qa_losses.py``), baselines, prediction files, and ``vqa-answer``'s items of new questions
(``train.data.qa_item``, as ``QADataset``'s) and their answers."""

from __future__ import annotations

import csv
import json
import logging
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor

from pipelines.atomic import atomic_path
from pipelines.text import encode_tokens, prepare_qa, tokenize
from train.config import TrainConfig
from train.data import (
    FeatureMismatchError,
    QACollate,
    QADataset,
    drop_missing_videos,
    feature_statistics,
    model_features,
    qa_item,
    segments_after_video,
)
from train.distributed import DistInfo, barrier
from train.losses import PredictionRecord, clip_mean, with_aux_losses
from train.tasks.base import ItemError, RunData, TaskKind, recorded_feature_stats, short_float
from train.tasks.qa_losses import (
    COUNT_MAX,
    COUNT_MIN,
    accuracy_metrics,
    count_loss,
    count_rounded,
    hinge_loss,
    mse_metrics,
    open_ended_loss,
    predict_choices,
    predict_classes,
    predict_counts,
)
from train.text_encoder import LoadedTextEncoder, encode_questions

if TYPE_CHECKING:
    from train.runner.spec import RunSpec

__all__ = ["COUNT", "MC", "OPEN", "CountTask", "MultipleChoiceTask", "OpenTask", "QATask", "build_qa_data"]

log = logging.getLogger("train")


def prepare_qa_once(adapter: Any, prep_kwargs: dict[str, Any], dist: DistInfo) -> Any:
    """``prepare_qa`` on the main process first (it writes the cache), then on the others."""
    prepared = prepare_qa(adapter, **prep_kwargs) if dist.is_main else None
    barrier()
    return prepared if dist.is_main else prepare_qa(adapter, **prep_kwargs)


def question_segments(adapter: Any, splits: dict[str, Any]) -> dict[str, dict[str, tuple[float, float]]]:
    """Question id -> (start, end) seconds per split, for datasets whose records carry a segment (How2QA)."""
    out: dict[str, dict[str, tuple[float, float]]] = {}
    for name in splits:
        found = {r.qid: tuple(r.segment) for r in adapter.records(name) if getattr(r, "segment", None)}
        if found:
            out[name] = found
    return out


def text_tokens(adapter: Any, splits: dict[str, Any], text_encoder: LoadedTextEncoder
                 ) -> dict[str, dict[str, dict[str, np.ndarray]]]:
    """Question id -> the transformer question encoder's token arrays, per split (tokenized once); with
    the subtitles when the encoded splits carry them (``prepare_qa(subtitles=True)``)."""
    out = {}
    for name, split in splits.items():
        recs = adapter.records(name)
        subs = [r.subtitle for r in recs] if getattr(split, "subtitles", None) is not None else None
        encoded = encode_questions(text_encoder.tokenizer, [r.question for r in recs],
                                   [r.candidates for r in recs], text_encoder.max_len, subtitles=subs,
                                   subtitle_max_len=text_encoder.subtitle_max_len)
        out[name] = {r.qid: e for r, e in zip(recs, encoded, strict=True)}
    return out


def build_qa_data(spec: RunSpec, adapter: Any, prepared: Any, reader: Any, entry: Any, *,
                  drop_unknown_answers: bool, text_encoder: LoadedTextEncoder | None = None,
                  recorded_stats: dict | None = None) -> RunData:
    """The train / val / test ``QADataset``s; ``drop_unknown_answers``: training questions whose answer is
    outside the answer vocabulary are dropped (open-ended)."""
    splits = prepared.splits
    feature_keys = tuple(getattr(entry, "feature_keys", ()) or ()) or None
    data = RunData()
    plan: dict[str, tuple[Any, np.ndarray]] = {}
    if "train" not in splits or "test" not in splits:
        raise FeatureMismatchError(f"{spec.dataset}: needs train and test splits, has {sorted(splits)}")
    train_split = splits["train"]
    n_train = len(train_split.qids)
    if "val" in splits:
        plan["train"] = (train_split, np.arange(n_train))
        plan["val"] = (splits["val"], np.arange(len(splits["val"].qids)))
    else:  # no official validation split: hold out a fixed-seed share of train
        perm = np.random.default_rng(0).permutation(n_train)
        n_val = max(1, int(round(spec.train.val_fraction * n_train)))
        plan["val"] = (train_split, np.sort(perm[:n_val]))
        plan["train"] = (train_split, np.sort(perm[n_val:]))
        log.info("%s has no val split: %d training questions held out for validation", spec.dataset, n_val)
    plan["test"] = (splits["test"], np.arange(len(splits["test"].qids)))

    stats = None
    if spec.train.feature_norm == "standardize" and recorded_stats is not None:
        stats = data.feature_stats = recorded_stats  # --resume / --eval-only: what the checkpoint saw
        log.info("features standardised per channel with the statistics the checkpoint records")
    elif spec.train.feature_norm == "standardize":
        train_split, train_rows = plan["train"]
        keys = feature_keys if feature_keys is not None else tuple(reader.outputs)
        keys = tuple(k for k in keys if not k.endswith("_times"))  # timestamps stay in seconds
        present = [train_split.video_ids[i] for i in train_rows if train_split.video_ids[i] in reader]
        stats = feature_statistics(reader, present, keys)
        log.info("features standardised per channel with the statistics of %d training videos",
                 len(set(present)))
        data.feature_stats = stats
    segments = question_segments(adapter, splits)
    texts = text_tokens(adapter, splits, text_encoder) if text_encoder is not None else {}
    for name, (split, rows) in plan.items():
        dropped: dict[str, int] = {}
        rows, n_missing = drop_missing_videos(name, split.video_ids, rows, reader, features=spec.features,
                                              allow=spec.allow_missing_features)
        if n_missing:
            dropped["missing_features"] = n_missing
        source = next(k for k, v in splits.items() if v is split)
        rows = drop_segments_after_video(name, split, rows, segments.get(source), reader, dropped)
        if name == "train" and drop_unknown_answers:
            answers = np.asarray(split.answers)
            oov = int((answers[rows] < 0).sum())
            if oov:
                rows = rows[answers[rows] >= 0]
                dropped["answer_out_of_vocabulary"] = oov
                log.info("train: dropped %d questions whose answer is outside the answer vocabulary", oov)
        if len(rows) == 0:
            raise FeatureMismatchError(f"the {name} split has no questions left to use")
        data.datasets[name] = QADataset(
            split, reader, feature_keys=feature_keys, indices=rows, feature_stats=stats,
            segments=segments.get(source), text_tokens=texts.get(source),
        )
        data.dropped[name] = dropped
    return data


def drop_segments_after_video(name: str, split: Any, rows: np.ndarray, segments: dict | None, reader: Any,
                               dropped: dict[str, int]) -> np.ndarray:
    """Drop (by name, counted) the questions whose segment (How2QA's ``ts``) starts after their video."""
    if not segments or "frame_times" not in reader.outputs:
        return rows
    asked = [(split.qids[i], split.video_ids[i], segments[split.qids[i]]) for i in rows
             if split.qids[i] in segments]
    outside = segments_after_video(asked, reader)
    if not outside:
        return rows
    gone = {qid for qid, *_ in outside}
    shown = "; ".join(f"{q} (video {v}: ts {a:g}-{b:g} s, the video ends by {e:.2f} s)"
                      for q, v, (a, b), e in outside[:3])
    log.warning("%s: dropped %d question(s) whose segment starts after the end of its video, e.g. %s", name,
                len(outside), shown)
    dropped["segment_after_video"] = len(outside)
    return np.array([i for i in rows if split.qids[i] not in gone], dtype=np.int64)

@dataclass
class QAView:
    """How a checkpoint reads a new question and its video (:meth:`QATask.answer_view`)."""

    index: dict[str, int]  # question vocabulary: token -> id
    max_len: int | None
    subtitles: bool  # trained on questions with subtitle text (How2QA)
    stats: dict[str, tuple[np.ndarray, np.ndarray]]
    feature_keys: tuple[str, ...]
    text_encoder: Any  # train.text_encoder.LoadedTextEncoder of transformer models, else None
    answer_vocab: list[str]
    note: str | None = None


class QATask(TaskKind):
    """The question-answering kinds' shared side: text, datasets, batches and prediction files.

    Attributes:
        regression: the answer is a regressed number (count): its batches carry float answers and its
            prediction files the raw prediction and the squared error instead of ``correct``.
    """

    reads_subtitles = True
    regression = False

    def prepare_text(self, spec: RunSpec, adapter: Any, reader: Any, dist: DistInfo, settings: Any,
                     prep_kwargs: dict[str, Any]) -> tuple[Any, RunData | None]:
        return prepare_qa_once(adapter, prep_kwargs, dist), None  # datasets after the checkpoint checks

    def vocabularies(self, prepared: Any) -> tuple[list[str], list[str] | None]:
        return list(prepared.question_vocab), list(prepared.answer_vocab) if self.answer_vocab else None

    def build_datasets(self, spec: RunSpec, adapter: Any, prepared: Any, reader: Any, entry: Any, *,
                       data: RunData | None, text_encoder: Any, recorded_stats: dict | None) -> RunData:
        return build_qa_data(spec, adapter, prepared, reader, entry, drop_unknown_answers=self.answer_vocab,
                             text_encoder=text_encoder, recorded_stats=recorded_stats)

    def collate(self, reader: Any) -> QACollate:
        return self.answer_collate(tuple(n for n, s in reader.outputs.items() if s.ragged))

    def losses(self, outputs: Mapping[str, Tensor], batch: Mapping[str, Any], *, margin: float = 1.0,
               hinge_reduction: str = "sum", **_: Any) -> dict[str, Tensor]:
        """``{<loss_name>: ...}`` (the mean over the clips of ``clip_<key>`` when the model returns them)
        plus the model's ``aux_losses`` (``train.losses``); ``margin`` and ``hinge_reduction``: multiple
        choice's hinge."""
        self.output(outputs)
        answer = batch["answer"]
        loss = clip_mean(lambda p: self.question_loss(p, answer, margin=margin, reduction=hinge_reduction),
                         outputs, self.output_key)
        return with_aux_losses({self.loss_name: loss}, outputs)

    def question_loss(self, pred: Tensor, answer: Tensor, *, margin: float, reduction: str) -> Tensor:
        """The kind's loss of one prediction (B, ...) against the answers (B,)."""
        raise NotImplementedError

    # -- vqa-answer ---------------------------------------------------------------------------------------

    def answer_view(self, meta: Mapping[str, Any], *, source: str, feature_keys: Sequence[str],
                    text_encoder: Any = None) -> QAView:
        return QAView(index={tok: i for i, tok in enumerate(meta["question_vocab"])},
                      max_len=meta.get("max_question_len"), subtitles=bool(meta.get("subtitles")),
                      stats=recorded_feature_stats(meta), feature_keys=tuple(feature_keys),
                      text_encoder=text_encoder, answer_vocab=list(meta["answer_vocab"]))

    def check_candidates(self, candidates: Sequence[str] | None) -> None:
        """Refuse candidates (multiple choice: their absence)."""
        if candidates:
            raise ItemError(f"this is a {self.name} model: it takes no candidates")

    def new_item(self, view: QAView, features: Mapping[str, Any], video_id: str, text: str, *,
                 candidates: Sequence[str] | None = None, segment: tuple[float, float] | None = None,
                 subtitle: str | None = None, duration: float | None = None) -> dict[str, Any]:
        """A ``QADataset`` item (``train.data.qa_item``) of a new question: tokens, features standardised
        with the recorded statistics, the segment (How2QA's ts; models that use none ignore it), the
        subtitle text (models trained with subtitles; none given: no text, length 0)."""
        if subtitle is not None and not view.subtitles:
            raise ItemError("this model was not trained with subtitles; drop the subtitle")
        self.check_candidates(candidates)
        ids, lengths = encode_tokens([tokenize(text)], view.index, view.max_len)
        cids = clen = sub_ids = tokens = None
        sub_len = 0
        if candidates:
            cids, clen = encode_tokens([tokenize(c) for c in candidates], view.index, view.max_len)
        if view.text_encoder is not None:  # the transformer's tokens, as build_qa_data's text_tokens
            tokens = view.text_encoder.tokens(text, candidates, (subtitle or "") if view.subtitles else None)
        elif view.subtitles:
            sids, slen = encode_tokens([tokenize(subtitle or "")], view.index, allow_empty=True)
            sub_ids, sub_len = sids[0], int(slen[0])
        return qa_item(qid="q", video_id=video_id, question=ids[0], question_len=int(lengths[0]), answer=0,
                       candidates=cids, candidates_len=clen, segment=segment, subtitle=sub_ids,
                       subtitle_len=sub_len, text_tokens=tokens,
                       features=model_features(features, view.feature_keys, view.stats, video_id=video_id))

    def answer_collate(self, ragged_keys: Sequence[str]) -> QACollate:
        return QACollate(ragged_keys, answer_dtype=torch.float32 if self.regression else torch.int64)

    def write_predictions(self, out: Path, split: str, records: Sequence[PredictionRecord]) -> None:
        """qid, video_id, qtype, prediction, answer and ``correct`` (count: ``raw_prediction`` and
        ``squared_error``)."""
        score_name = "squared_error" if self.regression else "correct"
        rows = []
        for r in records:
            row = {"qid": r.qid, "video_id": r.video_id, "qtype": r.qtype, "prediction": r.prediction,
                   "answer": r.answer}
            if r.raw is not None:
                row["raw_prediction"] = r.raw
            row[score_name] = r.score if self.regression else bool(r.score)
            rows.append(row)
        with atomic_path(out / f"predictions_{split}.jsonl") as tmp:
            tmp.write_text("".join(json.dumps(r, sort_keys=False) + "\n" for r in rows), encoding="utf-8")
        header = ["qid", "video_id", "qtype", "prediction", "answer"]
        header += ["raw_prediction"] if self.regression else []
        header += [score_name]
        with atomic_path(out / f"predictions_{split}.csv") as tmp:
            with open(tmp, "w", encoding="utf-8", newline="") as fh:
                w = csv.DictWriter(fh, fieldnames=header)
                w.writeheader()
                w.writerows(rows)


def _answers(data: RunData) -> tuple[Any, Any, np.ndarray, np.ndarray]:
    """The train and test datasets and their answers (of the rows used)."""
    tr, te = data.datasets["train"], data.datasets["test"]
    return tr, te, np.asarray(tr.split.answers)[tr.indices], np.asarray(te.split.answers)[te.indices]


class OpenTask(QATask):
    """Open-ended: a class of the answer vocabulary (cross-entropy; ``accuracy``, ``accuracy/<qtype>``)."""

    name = "open"
    output_key = "logits"
    loss_name = "loss_ce"
    answer_vocab = True

    def question_loss(self, pred: Tensor, answer: Tensor, *, margin: float, reduction: str) -> Tensor:
        return open_ended_loss(pred, answer)

    def predict(self, outputs: Mapping[str, Tensor], batch: Mapping[str, Any], *,
                answer_vocab: Sequence[str] | None = None, **_: Any) -> list[PredictionRecord]:
        return predict_classes(self.output(outputs), batch, answer_vocab)

    def metrics(self, records: Sequence[PredictionRecord]) -> dict[str, float]:
        return accuracy_metrics(records, by_type=True)

    def decode_answer(self, outputs: Mapping[str, Tensor], batch: Mapping[str, Any], view: QAView, *,
                      candidates: Sequence[str] | None, top_k: int) -> dict[str, Any]:
        """The top ``top_k`` answers with their probabilities."""
        probs = torch.softmax(outputs["logits"].float()[0], dim=0).cpu()
        top = torch.topk(probs, min(top_k, probs.numel()))
        return {"answers": [(view.answer_vocab[i], float(p))
                            for p, i in zip(top.values, top.indices.tolist(), strict=True)]}

    def answer_prediction(self, answer: Any) -> Any:
        return answer.answers[0][0]

    def answer_json(self, answer: Any) -> dict[str, Any]:
        return {"answers": [{"answer": a, "score": short_float(s)} for a, s in answer.answers]}

    def answer_table(self, answer: Any) -> list[str]:
        return [*self.header(answer), "  rank  probability  answer",
                *(f"  {r:>4}  {p:>11.4f}  {a}" for r, (a, p) in enumerate(answer.answers, 1))]

    def answer_lines(self, answer: Any, ground_truth: tuple[float, float] | None = None
                     ) -> list[tuple[str, float | None]]:
        return [(f"{a}  {p:.3f}", p) for a, p in answer.answers]

    def baselines(self, data: RunData, cfg: TrainConfig) -> dict[str, float]:
        """The majority training answer, and the most common training answer of each question type."""
        tr, te, tr_ans, te_ans = _answers(data)
        majority = Counter(tr_ans.tolist()).most_common(1)[0][0]
        # the most common training answer of each question type (e.g. "what color ..." -> its mode)
        by_type: dict[str, Counter] = {}
        for i, a in zip(tr.indices, tr_ans.tolist(), strict=True):
            by_type.setdefault(tr.split.qtypes[i], Counter())[a] += 1
        te_types = [te.split.qtypes[i] for i in te.indices]
        prior = [by_type[t].most_common(1)[0][0] if t in by_type else majority for t in te_types]
        return {
            "majority_answer_accuracy": float((te_ans == majority).mean()),
            "type_prior_accuracy": float((te_ans == np.asarray(prior)).mean()),
        }


class MultipleChoiceTask(QATask):
    """Multiple choice: one of C candidates (hinge loss; ``accuracy``)."""

    name = "mc"
    output_key = "scores"
    loss_name = "loss_hinge"

    def question_loss(self, pred: Tensor, answer: Tensor, *, margin: float, reduction: str) -> Tensor:
        return hinge_loss(pred, answer, margin=margin, reduction=reduction)

    def predict(self, outputs: Mapping[str, Tensor], batch: Mapping[str, Any], *,
                answer_vocab: Sequence[str] | None = None, **_: Any) -> list[PredictionRecord]:
        return predict_choices(self.output(outputs), batch)

    def metrics(self, records: Sequence[PredictionRecord]) -> dict[str, float]:
        return accuracy_metrics(records, by_type=False)

    def check_candidates(self, candidates: Sequence[str] | None) -> None:
        if not candidates:
            raise ItemError('this is a multiple-choice model: give the candidates (--candidates "a|b|c")')

    def decode_answer(self, outputs: Mapping[str, Tensor], batch: Mapping[str, Any], view: QAView, *,
                      candidates: Sequence[str] | None, top_k: int) -> dict[str, Any]:
        """Every candidate with its score, best first, and each one's position as given."""
        scores = outputs["scores"].float()[0].cpu()
        order = torch.argsort(scores, descending=True, stable=True).tolist()
        return {"answers": [(candidates[i], float(scores[i])) for i in order], "candidate_index": order}

    def answer_prediction(self, answer: Any) -> Any:
        return answer.candidate_index[0]

    def answer_json(self, answer: Any) -> dict[str, Any]:
        return {"answers": [{"answer": a, "score": short_float(s), "index": i}
                            for (a, s), i in zip(answer.answers, answer.candidate_index, strict=True)]}

    def answer_table(self, answer: Any) -> list[str]:
        ranked = enumerate(zip(answer.answers, answer.candidate_index, strict=True), 1)
        return [*self.header(answer), "  rank  score      candidate",
                *(f"  {r:>4}  {s:>9.4f}  [{i}] {a}" for r, ((a, s), i) in ranked)]

    def answer_lines(self, answer: Any, ground_truth: tuple[float, float] | None = None
                     ) -> list[tuple[str, float | None]]:
        """Each candidate's score, its bar the softmax of the scores."""
        scores = np.array([s for _, s in answer.answers], dtype=np.float64)
        probs = np.exp(scores - scores.max())
        probs /= probs.sum()
        return [(f"[{i}] {a}  score {s:.3f}", float(p))
                for (a, s), i, p in zip(answer.answers, answer.candidate_index, probs, strict=True)]

    def baselines(self, data: RunData, cfg: TrainConfig) -> dict[str, float]:
        """A random choice: 1 / C."""
        return {"random_choice_accuracy": 1.0 / data.datasets["train"].split.candidates.shape[1]}

    def describe_sample(self, p: Mapping[str, Any], record: Any) -> tuple[str, str]:
        pred, truth = p["prediction"], p["answer"]
        if record is None or not record.candidates:
            return str(pred), str(truth)
        return f"[{pred}] {record.candidates[int(pred)]}", f"[{truth}] {record.candidates[int(truth)]}"


class CountTask(QATask):
    """Count: a regressed number, rounded and clamped to 1..10 in evaluation (MSE; ``mse``)."""

    name = "count"
    output_key = "count"
    loss_name = "loss_mse"
    selection = ("mse", "min")  # of the rounded, clamped count
    regression = True
    per_type_score = "MSE"

    def prediction_hit(self, p: Mapping[str, Any]) -> bool:
        return p["squared_error"] == 0

    def prediction_score(self, p: Mapping[str, Any]) -> float:
        return float(p["squared_error"])

    def question_loss(self, pred: Tensor, answer: Tensor, *, margin: float, reduction: str) -> Tensor:
        return count_loss(pred, answer)

    def predict(self, outputs: Mapping[str, Tensor], batch: Mapping[str, Any], *,
                answer_vocab: Sequence[str] | None = None, **_: Any) -> list[PredictionRecord]:
        return predict_counts(self.output(outputs), batch)

    def metrics(self, records: Sequence[PredictionRecord]) -> dict[str, float]:
        return mse_metrics(records)

    def decode_answer(self, outputs: Mapping[str, Tensor], batch: Mapping[str, Any], view: QAView, *,
                      candidates: Sequence[str] | None, top_k: int) -> dict[str, Any]:
        """The count rounded and clamped as in evaluation, and the regressed value."""
        raw = outputs["count"].float().reshape(-1)[:1].cpu()
        return {"raw": float(raw[0]), "count": int(count_rounded(raw)[0])}

    def answer_prediction(self, answer: Any) -> Any:
        return answer.count

    def answer_json(self, answer: Any) -> dict[str, Any]:
        return {"count": answer.count, "raw": short_float(answer.raw)}

    def answer_table(self, answer: Any) -> list[str]:
        return [*self.header(answer), f"  count: {answer.count}  (regressed {answer.raw:.3f})"]

    def answer_lines(self, answer: Any, ground_truth: tuple[float, float] | None = None
                     ) -> list[tuple[str, float | None]]:
        return [(f"count {answer.count}  (regressed {answer.raw:.3f})", None)]

    def baselines(self, data: RunData, cfg: TrainConfig) -> dict[str, float]:
        """The training mean, rounded and clamped as the model's counts."""
        _, _, tr_ans, te_ans = _answers(data)
        mean = float(tr_ans.mean())
        pred = min(max(round(mean), COUNT_MIN), COUNT_MAX)
        return {"train_mean_mse": float(((pred - te_ans.astype(np.float64)) ** 2).mean())}


OPEN, MC, COUNT = OpenTask(), MultipleChoiceTask(), CountTask()
