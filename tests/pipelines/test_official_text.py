"""The official preprocessing rules of MSPAN and MASN (``pipelines.official_text``) on known sentences."""

from __future__ import annotations

import pytest

from pipelines.datasets.base import QARecord
from pipelines.official_text import TEXT_RULES, encode_official, masn_tokenize, treebank_tokenize


@pytest.mark.parametrize("text, tokens", [
    ("the man's dog can't run, can it", ["the", "man", "'s", "dog", "ca", "n't", "run", ",", "can", "it"]),
    ("what does he do 3,000 times; then", ["what", "does", "he", "do", "3,000", "times", ";", "then"]),
    ('who says "hi" (twice)', ["who", "says", "``", "hi", "''", "(", "twice", ")"]),
    ("what are they gonna do.", ["what", "are", "they", "gon", "na", "do", "."]),
])
def test_treebank_tokenisation(text, tokens):
    assert treebank_tokenize(text) == tokens


def test_mspan_rules_drop_the_last_character_and_replace_dashes_on_tgif_only():
    tgif, msqa = TEXT_RULES["mspan-tgif"], TEXT_RULES["mspan-msqa"]
    assert tgif.question("What is the T-shirt man/woman doing?") == ["what", "is", "the", "t", "shirt", "man",
                                                                    "woman", "doing"]
    assert msqa.question("What is the T-shirt man doing?") == ["what", "is", "the", "t-shirt", "man", "doing"]
    assert tgif.candidate("Jump Over the fence") == ["jump", "over", "the", "fence"]


def test_masn_cleaning_keeps_the_backslash_of_its_replacements():
    assert masn_tokenize("What's he doing (now)? It isn't 3.5!") == [
        "what", "'s", "he", "doing", "\\(", "now", "\\)", "\\?", "it", "is", "n't", "3", "5", "!"]
    assert masn_tokenize("a-b/c: d") == ["a", "b", "c", "d"]


class _Adapter:
    name, task, task_type = "tgif", "action", "mc"

    def __init__(self, records):
        self._records = records

    def splits(self):
        return ("train", "test")

    def records(self, split):
        return self._records


def test_masn_multiple_choice_is_one_sentence_of_at_most_20_tokens():
    long_q = " ".join(["word"] * 18) + " ?"  # 19 tokens: one left for the candidate
    recs = [QARecord("q0", "v0", "what is it ?", 1, ("a dog", "cat"), "action", "mc"),
            QARecord("q1", "v1", long_q, 0, ("big red ball", "x"), "action", "mc")]
    vocab = ["<pad>", "<unk>", "what", "is", "it", "\\?", "a", "dog", "cat", "word", "big"]
    split = encode_official(_Adapter(recs), "masn", vocab, []).splits["test"]
    assert split.question_len.tolist() == [4, 19]
    assert split.candidates_len.tolist() == [[2, 1], [1, 1]]
    assert split.candidates[0, 0, :2].tolist() == [6, 7] and split.candidates[1, 0, 0] == 10
    assert split.candidates[1, 1, 0] == 1  # "x": unknown
    assert split.answers.tolist() == [1, 0]


def test_answers_outside_the_official_list_are_minus_one_and_counts_at_least_one():
    class Open(_Adapter):
        task, task_type = "frameqa", "open"

    recs = [QARecord("q0", "v0", "what color ?", "red", None, "color", "open"),
            QARecord("q1", "v1", "what color ?", "Red", None, "color", "open")]
    split = encode_official(Open(recs), "mspan-tgif", ["<pad>", "<unk>", "what", "color"],
                            ["<UNK>", "red"]).splits["test"]
    assert split.answers.tolist() == [1, -1]  # looked up exactly, as the official code does
    assert split.questions[0].tolist() == [2, 3]  # the "?" is the dropped last character

    class Count(_Adapter):
        task, task_type = "count", "count"

    recs = [QARecord("q0", "v0", "how many ?", 0, None, "count", "count"),
            QARecord("q1", "v1", "how many ?", 4, None, "count", "count")]
    split = encode_official(Count(recs), "masn", ["<pad>", "<unk>"], []).splits["test"]
    assert split.answers.tolist() == [1.0, 4.0]
    with pytest.raises(ValueError, match="must start with <pad>, <unk>"):
        encode_official(Count(recs), "masn", ["#START#", "UNK"], [])
