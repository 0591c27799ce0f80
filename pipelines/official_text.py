"""Questions and answers encoded as the official preprocessing of MSPAN and MASN encodes them.

A released checkpoint (``vqa-convert``) has word-embedding rows and answer-classifier outputs indexed by
the vocabulary files of its authors' preprocessing, not by :mod:`pipelines.text`'s. Evaluating it needs
each question tokenised and looked up the way that preprocessing did; :func:`encode_official` does so
from a :class:`TextRule` and the official vocabularies stored in the converted checkpoint
(``meta["text_rule"]``, ``meta["question_vocab"]``, ``meta["answer_vocab"]``).

Rules (:data:`TEXT_RULES`), read from the official repositories' preprocessing (not copied):

- ``mspan-tgif`` (gzcsudo/MSPAN-VideoQA, TGIF-QA): the question has ``-`` and ``/`` turned into spaces,
  is lower-cased, loses its last character (meant for the question mark) and is split by Penn Treebank
  word tokenisation (the official code calls ``nltk.word_tokenize``; :func:`treebank_tokenize` applies
  the same rules as its word tokenizer, without nltk; its sentence splitting, which a one-sentence
  question does not need, is left out). Multiple-choice candidates are lower-cased and tokenised the
  same way, without the replacements and without dropping a character. No length limit.
- ``mspan-msqa`` (MSVD-QA, MSRVTT-QA): as ``mspan-tgif`` without the ``-`` / ``/`` replacement.
- ``masn`` (ahjeongseo/MASN-pytorch, every dataset): the sentence cleaning of Kim's CNN_sentence
  (:func:`masn_tokenize`: only letters, digits and ``( ) , ! ? ' ` _`` survive; clitics ``'s 've n't 're
  'd 'll`` become tokens; ``, !`` are split off; ``( ) ?`` become the two-character tokens ``\\( \\) \\?``
  because the official replacement string keeps the backslash), lower-cased, at most 20 tokens. For
  multiple choice, question and candidate are one sentence (``question + " " + candidate``) of at most
  20 tokens.

Both: index 0 pads (``<NULL>`` / ``#START#``, stored as ``<pad>``), an unknown word takes index 1
(``<UNK>`` / ``UNK``, stored as ``<unk>``). Count answers are ``max(count, 1)``, as both official codes
train and evaluate them. Open-ended answers are looked up exactly (no case folding) in the official
answer list; an answer that is not in it is encoded ``-1`` and counted wrong. The official code maps such
an answer onto a real class instead (MSPAN TGIF-QA: ``<UNK>`` = 0; MSPAN MSVD/MSRVTT-QA: a per-split
``<UNK0/1/2>``; MASN: index 1), so on TGIF-QA FrameQA and with MASN it counts a prediction of that class
as right; we do not.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from pipelines.datasets.base import DatasetAdapter, QARecord
from pipelines.text import PAD, UNK, EncodedSplit, PreparedQA

__all__ = ["TEXT_RULES", "TextRule", "encode_official", "masn_tokenize", "treebank_tokenize"]


# --------------------------------------------------------------------------------------------------
# Tokenisers
# --------------------------------------------------------------------------------------------------

# Penn Treebank rules as nltk.word_tokenize applies them (its NLTKWordTokenizer, nltk 3.x), in order;
# each is (pattern, replacement). Checked by hand against nltk's tokenizer on 40,000 generated sentences.
_CLOSERS = "\\]\\)}>\"'»”’ "
_TREEBANK_START = [
    (re.compile("([«“‘„]|[`]+)"), r" \1 "),  # opening quotes and backticks stand alone
    (re.compile(r'^"'), "``"), (re.compile(r"(``)"), r" \1 "),
    (re.compile(r'([ (\[{<])("|\'{2})'), r"\1 `` "),
    (re.compile(r"(?i)(')(?!re|ve|ll|m|t|s|d|n)(\w)\b"), r"\1 \2"),  # a leading apostrophe
]
_TREEBANK_PUNCT = [
    (re.compile(f"([^\\.])(\\.)([{_CLOSERS}]*)\\s*$"), r"\1 \2 \3 "),  # a sentence-final period
    (re.compile(r"([:,])([^\d])"), r" \1 \2"),  # , and : unless inside a number
    (re.compile(r"([:,])$"), r" \1 "),
    (re.compile(r"\.{2,}"), r" \g<0> "),
    (re.compile(r"[;@#$%&]"), r" \g<0> "),
    (re.compile(r"([^\.])(\.)([\]\)}>\"']*)\s*$"), r"\1 \2\3 "),
    (re.compile(r"[?!]"), r" \g<0> "),
    (re.compile(r"([^'])' "), r"\1 ' "),
    (re.compile(r"[*]"), r" \g<0> "),
    (re.compile(r"[\]\[\(\)\{\}<>]"), r" \g<0> "),
    (re.compile(r"--"), r" -- "),
]
_TREEBANK_END = [
    (re.compile("([»”’])"), r" \1 "), (re.compile(r"''"), " '' "), (re.compile(r'"'), " '' "),
    (re.compile(r"([^' ])('[sS]|'[mM]|'[dD]|') "), r"\1 \2 "),
    (re.compile(r"([^' ])('ll|'LL|'re|'RE|'ve|'VE|n't|N'T) "), r"\1 \2 "),
]
# words the Treebank splits in two (cannot -> can not, gonna -> gon na, ...)
_TREEBANK_SPLIT = [re.compile(p, re.IGNORECASE) for p in (
    r"\b(can)(not)\b", r"\b(d)('ye)\b", r"\b(gim)(me)\b", r"\b(gon)(na)\b", r"\b(got)(ta)\b",
    r"\b(lem)(me)\b", r"\b(more)('n)\b", r"\b(wan)(na)(?=\s)", r" ('t)(is)\b", r" ('t)(was)\b",
)]


def treebank_tokenize(text: str) -> list[str]:
    """Penn Treebank word tokenisation of one sentence (the rules ``nltk.word_tokenize`` applies).

    ``"the man's dog can't run, can it"`` -> ``[the, man, 's, dog, ca, n't, run, ",", can, it]``.
    """
    for rules in (_TREEBANK_START, _TREEBANK_PUNCT):
        for pattern, repl in rules:
            text = pattern.sub(repl, text)
    text = f" {text} "
    for pattern, repl in _TREEBANK_END:
        text = pattern.sub(repl, text)
    for pattern in _TREEBANK_SPLIT:
        text = pattern.sub(r" \1 \2 ", text)
    return text.split()


_MASN_DROP = re.compile(r"[^A-Za-z0-9(),!?'`_]")
_MASN_CLITICS = ("'s", "'ve", "n't", "'re", "'d", "'ll")
_MASN_PAD = {",": " , ", "!": " ! ", "(": " \\( ", ")": " \\) ", "?": " \\? "}


def masn_tokenize(text: str) -> list[str]:
    """MASN's sentence cleaning (Kim's CNN_sentence rules), lower-cased and split on whitespace.

    ``"What's he doing?"`` -> ``["what", "'s", "he", "doing", "\\\\?"]`` (the ``?`` token keeps a backslash).
    """
    text = _MASN_DROP.sub(" ", text)
    for clitic in _MASN_CLITICS:  # one after another, as the official cleaning does
        text = text.replace(clitic, " " + clitic)
    for mark, padded in _MASN_PAD.items():
        text = text.replace(mark, padded)
    return text.strip().lower().split()


def _mspan_question(text: str, *, replace: bool) -> list[str]:
    if replace:
        text = text.replace("-", " ").replace("/", " ")
    return treebank_tokenize(text.lower()[:-1])


# --------------------------------------------------------------------------------------------------
# Rules
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TextRule:
    """How one official preprocessing turns text into tokens.

    Attributes:
        question: question text -> tokens.
        candidate: multiple-choice candidate text -> tokens.
        max_len: at most this many tokens per question (None = no limit).
        joint_candidates: multiple choice encodes question and candidate as one sentence of at most
            ``max_len`` tokens (the candidate keeps what the question leaves).
        description: one line for logs and metrics.
    """

    question: Callable[[str], list[str]]
    candidate: Callable[[str], list[str]]
    max_len: int | None
    joint_candidates: bool
    description: str


TEXT_RULES: dict[str, TextRule] = {
    "mspan-tgif": TextRule(
        lambda q: _mspan_question(q, replace=True), lambda c: treebank_tokenize(c.lower()), None, False,
        "MSPAN official (TGIF-QA): '-' '/' -> space, lower case, last character dropped, Treebank tokens"),
    "mspan-msqa": TextRule(
        lambda q: _mspan_question(q, replace=False), lambda c: treebank_tokenize(c.lower()), None, False,
        "MSPAN official (MSVD/MSRVTT-QA): lower case, last character dropped, Treebank tokens"),
    "masn": TextRule(
        masn_tokenize, masn_tokenize, 20, True,
        "MASN official: CNN_sentence cleaning, lower case, at most 20 tokens (question + candidate)"),
}


# --------------------------------------------------------------------------------------------------
# Encoding
# --------------------------------------------------------------------------------------------------


def _ids(token_lists: Sequence[Sequence[str]], index: dict[str, int], *, keep_empty: bool = False
         ) -> tuple[np.ndarray, np.ndarray]:
    """0-padded (N, L) ids and (N,) lengths; an empty list becomes one ``<unk>`` unless ``keep_empty``."""
    unk = index[UNK]
    rows = [[index.get(t, unk) for t in tokens] or ([] if keep_empty else [unk]) for tokens in token_lists]
    ids = np.zeros((len(rows), max((len(r) for r in rows), default=1) or 1), dtype=np.int64)
    for i, row in enumerate(rows):
        ids[i, : len(row)] = row
    return ids, np.array([len(r) for r in rows], dtype=np.int64)


def _answers(records: Sequence[QARecord], task_type: str, answer_index: dict[str, int]) -> np.ndarray:
    if task_type == "open":
        return np.array([answer_index.get(str(r.answer), -1) for r in records], dtype=np.int64)
    if task_type == "mc":
        return np.array([int(r.answer) for r in records], dtype=np.int64)
    return np.array([max(float(r.answer), 1.0) for r in records], dtype=np.float32)


def _encode_split(records: Sequence[QARecord], rule: TextRule, task_type: str, index: dict[str, int],
                  answer_index: dict[str, int]) -> EncodedSplit:
    questions = [rule.question(r.question)[: rule.max_len] for r in records]
    q_ids, q_len = _ids(questions, index)
    cand_ids = cand_len = None
    if task_type == "mc":
        counts = {len(r.candidates or ()) for r in records}
        if len(counts) != 1:
            raise ValueError(f"questions have different numbers of candidates {sorted(counts)}")
        flat = []
        for q, r in zip(questions, records, strict=True):
            for c in r.candidates or ():
                tokens = rule.candidate(c)
                if rule.joint_candidates and rule.max_len is not None:
                    tokens = tokens[: max(rule.max_len - len(q), 0)]
                flat.append(tokens)
        ids, lens = _ids(flat, index, keep_empty=rule.joint_candidates)
        n = counts.pop()
        cand_ids, cand_len = ids.reshape(len(records), n, -1), lens.reshape(len(records), n)
    return EncodedSplit(
        qids=[r.qid for r in records], video_ids=[r.video_id for r in records],
        qtypes=[r.qtype for r in records], questions=q_ids, question_len=q_len,
        candidates=cand_ids, candidates_len=cand_len, answers=_answers(records, task_type, answer_index),
        answer_text=[str(r.answer) if task_type != "mc" else str((r.candidates or ("",))[int(r.answer)])
                     for r in records],
    )


def encode_official(adapter: DatasetAdapter, rule_name: str, question_vocab: Sequence[str],
                    answer_vocab: Sequence[str]) -> PreparedQA:
    """Every split of a QA dataset encoded with an official rule and the official vocabularies.

    Args:
        adapter: a QA adapter with its task set.
        rule_name: a key of :data:`TEXT_RULES`.
        question_vocab: the official question vocabulary by index (0 = ``<pad>``, 1 = ``<unk>``).
        answer_vocab: the official answer list by index (open-ended; ignored otherwise).

    Returns:
        A :class:`PreparedQA` like :func:`pipelines.text.prepare_qa`'s (no embeddings: the weights carry
        them), with answers outside ``answer_vocab`` encoded -1.

    Raises:
        KeyError: an unknown rule; ValueError: a vocabulary without ``<pad>``/``<unk>`` at 0/1.
    """
    rule = TEXT_RULES[rule_name]
    if list(question_vocab[:2]) != [PAD, UNK]:
        raise ValueError(f"the question vocabulary must start with {PAD}, {UNK}; it starts with "
                         f"{list(question_vocab[:2])}")
    task_type = adapter.task_type
    index = {tok: i for i, tok in enumerate(question_vocab)}
    answer_index = {a: i for i, a in enumerate(answer_vocab)} if task_type == "open" else {}
    splits = {split: _encode_split(adapter.records(split), rule, task_type, index, answer_index)
              for split in adapter.splits()}
    return PreparedQA(adapter.name, adapter.task, task_type, list(question_vocab),
                      list(answer_vocab) if task_type == "open" else [], None, splits,
                      cache_key=f"official-{rule_name}")
