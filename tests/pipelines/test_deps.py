"""Dependency edges: chain fallback, pre-parsed input, optional spaCy, cache per dataset."""

from __future__ import annotations

import importlib.util
import json
import logging
import sys
import types

import numpy as np
import pytest

from pipelines import deps as deps_module
from pipelines.datasets import DatasetFormatError, get_dataset
from pipelines.deps import SpacyUnavailable, adjacency, chain_edges, dependency_edges, load_parsed_edges

HAS_SPACY = importlib.util.find_spec("spacy") is not None


def write_captions(root):
    root.mkdir()
    files = {"train.json": {"v_aaaaaaaaaaa": {"duration": 20.0, "timestamps": [[0, 5], [5, 9]],
                                               "sentences": ["A man opens the door.", "He walks in"]}},
             "val_1.json": {"v_bbbbbbbbbbb": {"duration": 10.0, "timestamps": [[1, 2]],
                                               "sentences": ["Dogs bark"]}},
             "val_2.json": {"v_bbbbbbbbbbb": {"duration": 10.0, "timestamps": [[3, 4]],
                                               "sentences": ["Cats"]}}}
    for name, data in files.items():
        (root / name).write_text(json.dumps(data))
    return root


def test_chain_edges():
    assert chain_edges(["a", "man", "runs"]) == [(0, 1, "adj"), (1, 2, "adj")]
    assert chain_edges(["x"]) == []


@pytest.mark.skipif(HAS_SPACY, reason="spaCy installed: the fallback is not taken")
def test_auto_falls_back_to_chain_and_caches(tmp_path, caplog, monkeypatch):
    adapter = get_dataset("activitynet-captions")(write_captions(tmp_path / "anet"))
    with caplog.at_level(logging.WARNING):
        parsed = dependency_edges(adapter, cache_dir=tmp_path / "cache")
    assert "fall back to a chain" in caplog.text and "pip install spacy" in caplog.text
    assert parsed.parser == "chain"
    assert parsed.qids["train"] == ["train:v_aaaaaaaaaaa#0", "train:v_aaaaaaaaaaa#1"]
    assert parsed.tokens["train"][0] == ["a", "man", "opens", "the", "door", "."]
    assert parsed.edges["train"][0] == [(i, i + 1, "adj") for i in range(5)]
    assert parsed.edges["test"] == [[]] and parsed.qids["test"] == ["test:v_bbbbbbbbbbb#0"]
    (cache,) = (tmp_path / "cache").glob("activitynet-captions-deps-*.json")

    def boom(adapter):
        raise AssertionError("parsed again")

    monkeypatch.setattr(deps_module, "_queries", boom)
    fresh = get_dataset("activitynet-captions")(tmp_path / "anet")
    again = dependency_edges(fresh, cache_dir=tmp_path / "cache")
    assert again.edges == parsed.edges and again.tokens == parsed.tokens
    with pytest.raises(SpacyUnavailable, match="pip install spacy"):
        dependency_edges(adapter, cache_dir=tmp_path / "cache", parser="spacy")


def test_pre_parsed_edges(tmp_path):
    root = write_captions(tmp_path / "anet")
    adapter = get_dataset("activitynet-captions")(root)
    edges = {"train:v_aaaaaaaaaaa#0": [[2, 1, "nsubj"], [1, 0, "det"], [2, 4, "dobj"], [4, 3, "det"]],
             "train:v_aaaaaaaaaaa#1": [[1, 0, "nsubj"], [1, 2, "prt"]],
             "val:v_bbbbbbbbbbb#0": [[1, 0, "nsubj"]], "test:v_bbbbbbbbbbb#0": [], "unused": []}
    path = tmp_path / "parsed.json"
    path.write_text(json.dumps(edges))
    parsed = dependency_edges(adapter, cache_dir=tmp_path / "cache", parsed=path)
    assert parsed.parser.startswith("file:")
    assert parsed.edges["train"][0] == [(2, 1, "nsubj"), (1, 0, "det"), (2, 4, "dobj"), (4, 3, "det")]
    assert parsed.edges["val"] == [[(1, 0, "nsubj")]]
    # a changed pre-parsed file is a new cache entry
    edges["val:v_bbbbbbbbbbb#0"] = [[0, 1, "amod"]]
    path.write_text(json.dumps(edges))
    changed = dependency_edges(adapter, cache_dir=tmp_path / "cache", parsed=path)
    assert changed.edges["val"] == [[(0, 1, "amod")]]
    assert len(list((tmp_path / "cache").glob("*.json"))) == 2


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ({"q0": [[0, 5, "x"]]}, r"record 'q0' edge 0: index out of range for the 3 tokens"),
        ({"q0": [[0, "1", "x"]]}, r"record 'q0' edge 0: \[0, '1', 'x'\]"),
        ({}, r"no edges for query 'q0'"),
        ({"q0": {"0": 1}}, r"record 'q0': not a list of edges"),
    ],
)
def test_pre_parsed_bad_input(tmp_path, content, message):
    path = tmp_path / "p.json"
    path.write_text(json.dumps(content))
    with pytest.raises(DatasetFormatError, match="p.json: " + message):
        load_parsed_edges(path, ["q0"], [["a", "b", "c"]])
    path.write_text('{"q0": [[0, 1, "x"]],\n "q1": [')
    with pytest.raises(DatasetFormatError, match=r"p.json: line 2: invalid JSON"):
        load_parsed_edges(path, ["q0"], [["a", "b", "c"]])


def test_adjacency():
    adj = adjacency([(0, 1, "adj"), (1, 2, "adj"), (2, 7, "x")], 3)
    assert adj.dtype == np.float32
    assert adj.tolist() == [[1, 1, 0], [1, 1, 1], [0, 1, 1]]
    directed = adjacency([(0, 1, "nsubj")], 2, self_loops=False, symmetric=False)
    assert directed.tolist() == [[0, 1], [0, 0]]


def test_bad_parser_name(tmp_path):
    adapter = get_dataset("activitynet-captions")(write_captions(tmp_path / "anet"))
    with pytest.raises(ValueError, match="parser must be"):
        dependency_edges(adapter, cache_dir=tmp_path, parser="stanza")


@pytest.mark.skipif(not HAS_SPACY, reason="spaCy not installed (pip install spacy)")
def test_spacy_edges_when_installed(tmp_path):  # pragma: no cover - depends on the environment
    try:
        parsed = deps_module.spacy_edges([["a", "man", "opens", "the", "door"]])
    except SpacyUnavailable:
        pytest.skip("no English spaCy model (python -m spacy download en_core_web_sm)")
    heads = {dep: head for head, dep, _ in parsed[0]}
    assert heads[1] == 2 and len(parsed[0]) == 4


def _fake_spacy(monkeypatch):
    """A stand-in for spaCy with its API surface: load(), nlp.vocab/pipeline/meta, tokens.Doc."""

    class Token:
        def __init__(self, i, word):
            self.i, self.text, self.head, self.dep_ = i, word, self, ""

    class Doc:
        def __init__(self, vocab, words):
            assert vocab == "vocab"
            self.tokens = [Token(i, w) for i, w in enumerate(words)]

        def __iter__(self):
            return iter(self.tokens)

    def parser(doc):  # every token depends on the last one ("root"), label "dep<i>"
        for tok in doc.tokens[:-1]:
            tok.head, tok.dep_ = doc.tokens[-1], f"dep{tok.i}"
        return doc

    nlp = types.SimpleNamespace(vocab="vocab", pipeline=[("parser", parser)], meta={"version": "9.9"})
    spacy = types.ModuleType("spacy")
    spacy.__version__ = "3.fake"
    spacy.load = lambda name: nlp if name == "en_core_web_sm" else (_ for _ in ()).throw(OSError(name))
    tokens = types.ModuleType("spacy.tokens")
    tokens.Doc = Doc
    spacy.tokens = tokens
    monkeypatch.setitem(sys.modules, "spacy", spacy)
    monkeypatch.setitem(sys.modules, "spacy.tokens", tokens)


def test_spacy_path_with_a_stand_in_parser(tmp_path, monkeypatch):
    _fake_spacy(monkeypatch)
    adapter = get_dataset("activitynet-captions")(write_captions(tmp_path / "anet"))
    parsed = dependency_edges(adapter, cache_dir=tmp_path / "cache", parser="spacy")
    assert parsed.parser == "spacy:en_core_web_sm@9.9/spacy3.fake"
    assert parsed.edges["train"][1] == [(2, 0, "dep0"), (2, 1, "dep1")]  # "he walks in": head = last token
    with pytest.raises(SpacyUnavailable, match="python -m spacy download en_core_web_lg"):
        dependency_edges(adapter, cache_dir=tmp_path / "cache", parser="spacy", spacy_model="en_core_web_lg")
    # auto with a loadable model uses it; the chain cache is a different entry
    assert dependency_edges(adapter, cache_dir=tmp_path / "cache").parser.startswith("spacy:")
    assert dependency_edges(adapter, cache_dir=tmp_path / "cache", parser="chain").parser == "chain"
    assert len(list((tmp_path / "cache").glob("*.json"))) == 2


def test_new_queries_are_parsed_as_the_training_queries_were(monkeypatch):
    tokens = ["he", "walks", "in"]
    parse, note = deps_module.new_query_parser("chain")
    assert parse(tokens) == chain_edges(tokens) and note is None
    with pytest.raises(ValueError, match="unknown dependency parser"):
        deps_module.new_query_parser("udpipe")
    _fake_spacy(monkeypatch)
    parse, note = deps_module.new_query_parser("spacy:en_core_web_sm@9.9/spacy3.fake")
    assert parse(tokens) == [(2, 0, "dep0"), (2, 1, "dep1")] and note is None  # the same parser: exact
    _, note = deps_module.new_query_parser("spacy:en_core_web_sm@9.0/spacy3.fake")
    assert "the run used spacy:en_core_web_sm@9.0" in note
    with pytest.raises(SpacyUnavailable, match="en_core_web_lg"):  # the run's model is not installed
        deps_module.new_query_parser("spacy:en_core_web_lg@3.7/spacy3.7")
    # stored parses (CMIN's *_gcn.json) cannot be made for a new sentence: the auto fallback, said so
    parse, note = deps_module.new_query_parser("file:" + "ab" * 32)
    assert parse(tokens) == [(2, 0, "dep0"), (2, 1, "dep1")] and "stored parses" in note and "spaCy" in note

    def unavailable(model):
        raise SpacyUnavailable("no spaCy")

    monkeypatch.setattr(deps_module, "_load_spacy", unavailable)
    parse, note = deps_module.new_query_parser("file:" + "ab" * 32)
    assert parse(tokens) == chain_edges(tokens) and "chain" in note
