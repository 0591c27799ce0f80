"""Dependency edges of queries for CMIN's syntactic graph convolution.

CMIN (Zhang et al., "Cross-Modal Interaction Networks for Query-Based Moment Retrieval in Videos",
SIGIR 2019) runs a graph convolution over the dependency parse of each query; its public code ships
no parsing script (CMIN issue #9). This module produces, for every query, the edges
``(head, dependent, label)`` over the tokens of :func:`pipelines.text.tokenize` (so token indices
match the encoded query ids), from one of three sources:

- ``"spacy"``: spaCy with an English model, run on the toolkit's own tokens (the pipeline
  components applied to a ``Doc`` built from them). Install one with::

      pip install spacy && python -m spacy download en_core_web_sm

  (``pip install videoqa-toolkit[parse]`` installs spaCy itself). spaCy is imported lazily, only
  when asked for; it is not a dependency of the toolkit.
- ``"chain"``: the documented fallback when no parser is installed: a chain over adjacent words,
  edge ``(i, i + 1, "adj")`` for every i, which turns CMIN's syntactic GCN into a local
  (window-1) convolution over the sentence.
- a pre-parsed JSON file (``parsed=``): ``{"<qid>": [[head, dependent, "label"], ...], ...}`` with
  0-based indices into the tokens of :func:`pipelines.text.tokenize`; every query of the dataset
  must be present and indices must be in range.

``parser="auto"`` uses spaCy when a model can be loaded and the chain otherwise (logged).
Results are cached per dataset as ``<cache_dir>/<dataset>-deps-<key>.json`` keyed by the
annotation content, the tokenizer version and the parser identity (spaCy and model versions, or the
pre-parsed file's sha256).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipelines.atomic import write_json_atomic
from pipelines.datasets.base import DatasetAdapter, DatasetFormatError
from pipelines.text import TOKENIZER_VERSION, tokenize

__all__ = [
    "Edge",
    "ParsedQueries",
    "SpacyUnavailable",
    "adjacency",
    "chain_edges",
    "dependency_edges",
    "load_parsed_edges",
    "new_query_parser",
    "spacy_edges",
]

log = logging.getLogger(__name__)

Edge = tuple[int, int, str]
_FORMAT_VERSION = 1
_INSTALL = "pip install spacy && python -m spacy download en_core_web_sm"


class SpacyUnavailable(RuntimeError):
    """spaCy or its English model cannot be loaded."""


@dataclass
class ParsedQueries:
    """Dependency edges of every query of a dataset.

    Attributes:
        parser: ``"spacy:<model>@<version>"``, ``"chain"`` or ``"file:<sha256>"``.
        qids: per split, the query ids in annotation order.
        tokens: per split, the tokens of each query (:func:`pipelines.text.tokenize`).
        edges: per split, the (head, dependent, label) edges of each query.
    """

    parser: str
    qids: dict[str, list[str]]
    tokens: dict[str, list[list[str]]]
    edges: dict[str, list[list[Edge]]]


def chain_edges(tokens: Sequence[str]) -> list[Edge]:
    """The fallback parse: ``(i, i + 1, "adj")`` for every pair of adjacent tokens."""
    return [(i, i + 1, "adj") for i in range(len(tokens) - 1)]


def _load_spacy(model: str):
    try:
        import spacy
    except ImportError as exc:
        raise SpacyUnavailable(f"spaCy is not installed; install it with `{_INSTALL}`") from exc
    try:
        nlp = spacy.load(model)
    except OSError as exc:
        msg = f"spaCy model {model!r} is not installed; `python -m spacy download {model}`"
        raise SpacyUnavailable(msg) from exc
    return spacy, nlp


def spacy_edges(
    token_lists: Sequence[Sequence[str]], *, model: str = "en_core_web_sm", nlp=None
) -> list[list[Edge]]:
    """Parse pre-tokenized queries with spaCy.

    Args:
        token_lists: the tokens of each query.
        model: an installed spaCy English pipeline.
        nlp: an already loaded spaCy pipeline (then ``model`` is not loaded).

    Returns:
        Per query, ``(head, dependent, label)`` for every token except the root(s).

    Raises:
        SpacyUnavailable: spaCy or the model is not installed.
    """
    if nlp is None:
        _, nlp = _load_spacy(model)
    from spacy.tokens import Doc

    out = []
    for tokens in token_lists:
        doc = Doc(nlp.vocab, words=list(tokens))
        for _, component in nlp.pipeline:
            doc = component(doc)
        out.append([(tok.head.i, tok.i, tok.dep_) for tok in doc if tok.head.i != tok.i])
    return out


def load_parsed_edges(path: str | os.PathLike, qids: Sequence[str], token_lists: Sequence[Sequence[str]]
                      ) -> list[list[Edge]]:
    """Edges of each query from a pre-parsed JSON file, checked against the queries' tokens.

    Args:
        path: ``{"<qid>": [[head, dependent, "label"], ...]}``.
        qids: the query ids to look up.
        token_lists: their tokens (for the index range check).

    Raises:
        DatasetFormatError: unreadable file, missing query, malformed edge or index out of range.
    """
    path = Path(path)
    expected = 'a JSON object {"<qid>": [[head, dependent, "label"], ...]} with 0-based token indices'
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DatasetFormatError(f"{path}: file not found; expected {expected}") from None
    except json.JSONDecodeError as exc:
        msg = f"{path}: line {exc.lineno}: invalid JSON ({exc.msg}); expected {expected}"
        raise DatasetFormatError(msg) from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise DatasetFormatError(f"{path}: cannot read ({exc}); expected {expected}") from exc
    if not isinstance(data, dict):
        raise DatasetFormatError(f"{path}: top level is {type(data).__name__}; expected {expected}")
    out = []
    for qid, tokens in zip(qids, token_lists, strict=True):
        if qid not in data:
            raise DatasetFormatError(f"{path}: no edges for query {qid!r}; expected {expected}")
        edges = []
        raw = data[qid]
        if not isinstance(raw, list):
            raise DatasetFormatError(f"{path}: record {qid!r}: not a list of edges; expected {expected}")
        for k, edge in enumerate(raw):
            ok = (isinstance(edge, list) and len(edge) in (2, 3)
                  and all(isinstance(v, int) and not isinstance(v, bool) for v in edge[:2]))
            if not ok:
                raise DatasetFormatError(f"{path}: record {qid!r} edge {k}: {edge!r}; expected {expected}")
            head, dep = edge[0], edge[1]
            if not (0 <= head < len(tokens) and 0 <= dep < len(tokens)):
                raise DatasetFormatError(
                    f"{path}: record {qid!r} edge {k}: index out of range for the {len(tokens)} tokens "
                    f"{tokens}; expected indices into pipelines.text.tokenize(query)"
                )
            edges.append((head, dep, str(edge[2]) if len(edge) == 3 else "dep"))
        out.append(edges)
    return out


def _queries(adapter: DatasetAdapter) -> tuple[dict[str, list[str]], dict[str, list[str]]]:
    qids, texts = {}, {}
    for split in adapter.splits():
        if adapter.kind == "moment":
            items = adapter.moments(split)
            qids[split], texts[split] = [m.qid for m in items], [m.query for m in items]
        else:
            records = adapter.records(split)
            qids[split], texts[split] = [r.qid for r in records], [r.question for r in records]
    return qids, texts


def _file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def dependency_edges(
    adapter: DatasetAdapter,
    *,
    cache_dir: str | os.PathLike,
    parser: str = "auto",
    parsed: str | os.PathLike | None = None,
    spacy_model: str = "en_core_web_sm",
) -> ParsedQueries:
    """Dependency edges of every query (moment datasets) or question (QA datasets), cached per dataset.

    Args:
        adapter: the dataset.
        cache_dir: where ``<dataset>-deps-<key>.json`` is stored.
        parser: ``"auto"`` (spaCy if a model loads, else the chain), ``"spacy"`` (fail without it) or
            ``"chain"``; ignored when ``parsed`` is given.
        parsed: a pre-parsed JSON file (see the module docstring).
        spacy_model: the spaCy pipeline name.

    Returns:
        :class:`ParsedQueries`.

    Raises:
        SpacyUnavailable: ``parser="spacy"`` without spaCy or its model.
        DatasetFormatError: bad annotations or a bad pre-parsed file.
    """
    if parser not in ("auto", "spacy", "chain"):
        raise ValueError(f"parser must be 'auto', 'spacy' or 'chain', got {parser!r}")
    spacy_nlp = None
    if parsed is not None:
        identity = f"file:{_file_sha256(Path(parsed))}"
    elif parser == "chain":
        identity = "chain"
    else:
        try:
            spacy, spacy_nlp = _load_spacy(spacy_model)
            identity = f"spacy:{spacy_model}@{spacy_nlp.meta.get('version', '?')}/spacy{spacy.__version__}"
        except SpacyUnavailable as exc:
            if parser == "spacy":
                raise
            log.warning("%s; dependency edges fall back to a chain over adjacent words (label 'adj')", exc)
            identity = "chain"
    key_payload = json.dumps({"format": _FORMAT_VERSION, "tokenizer": TOKENIZER_VERSION,
                              "annotations": adapter.fingerprint(), "parser": identity}, sort_keys=True)
    key = hashlib.sha256(key_payload.encode()).hexdigest()[:20]
    task = f"-{adapter.task}" if adapter.task else ""
    cache = Path(cache_dir) / f"{adapter.name}{task}-deps-{key}.json"
    if cache.is_file():
        try:
            data = json.loads(cache.read_text(encoding="utf-8"))
            edges = {s: [[(h, d, lab) for h, d, lab in q] for q in qs] for s, qs in data["edges"].items()}
            return ParsedQueries(data["parser"], data["qids"], data["tokens"], edges)
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.warning("dependency cache %s unreadable (%s); rebuilding", cache, exc)
    qids, texts = _queries(adapter)
    tokens = {s: [tokenize(t) for t in ts] for s, ts in texts.items()}
    edges: dict[str, list[list[Edge]]] = {}
    for split in qids:
        if parsed is not None:
            edges[split] = load_parsed_edges(parsed, qids[split], tokens[split])
        elif identity == "chain":
            edges[split] = [chain_edges(t) for t in tokens[split]]
        else:
            edges[split] = spacy_edges(tokens[split], model=spacy_model, nlp=spacy_nlp)
    write_json_atomic(cache, {"parser": identity, "qids": qids, "tokens": tokens,
                              "edges": {s: [[list(e) for e in q] for q in qs] for s, qs in edges.items()}})
    log.info("%s: dependency edges (%s) cached in %s", adapter.name, identity, cache)
    return ParsedQueries(identity, qids, tokens, edges)


def new_query_parser(identity: str, *, spacy_model: str = "en_core_web_sm"
                     ) -> tuple[Callable[[Sequence[str]], list[Edge]], str | None]:
    """A parser for new queries (``vqa-answer --query``) that follows the recorded parser ``identity``.

    Args:
        identity: :attr:`ParsedQueries.parser` of the training queries.
        spacy_model: the pipeline for the stored-parses fallback (below).

    Returns:
        ``(parse, note)``: ``parse(tokens)`` gives the edges of one query's tokens; ``note`` is None when
        the queries are parsed exactly as in training, else one line saying how they differ:

        - ``"chain"``: the chain (exact).
        - ``"spacy:<model>@<version>/spacy<version>"``: spaCy with that model; another installed
          version is named in the note.
        - ``"file:<sha256>"``: the training queries came with stored parses (CMIN's ``*_gcn.json``),
          which nothing reproduces for a new sentence: the fallback of ``parser="auto"`` (spaCy when a
          model loads, else the chain) is used instead, and the note says so.

    Raises:
        SpacyUnavailable: the run used spaCy and its model is not installed here.
    """
    if identity == "chain":
        return chain_edges, None
    if identity.startswith("spacy:"):
        model = identity.removeprefix("spacy:").split("@", 1)[0]
        spacy, nlp = _load_spacy(model)
        current = f"spacy:{model}@{nlp.meta.get('version', '?')}/spacy{spacy.__version__}"
        note = None if current == identity else f"queries parsed with {current}; the run used {identity}"
        return (lambda tokens: spacy_edges([tokens], nlp=nlp)[0]), note
    if identity.startswith("file:"):
        try:
            _, nlp = _load_spacy(spacy_model)
            parse, used = (lambda tokens: spacy_edges([tokens], nlp=nlp)[0]), f"spaCy {spacy_model}"
        except SpacyUnavailable:
            parse, used = chain_edges, "the chain over adjacent words"
        return parse, (f"the training queries used the dataset's stored parses ({identity[:17]}...), which "
                       f"cannot be made for a new sentence; its edges come from {used} instead (labels the "
                       "model did not see count as unknown)")
    raise ValueError(f"unknown dependency parser {identity!r}; expected 'chain', 'spacy:...' or 'file:...'")


def adjacency(edges: Sequence[Edge], length: int, *, self_loops: bool = True, symmetric: bool = True
              ) -> np.ndarray:
    """A dense adjacency matrix for a (possibly truncated) query of ``length`` tokens.

    Args:
        edges: (head, dependent, label) edges; edges touching a token >= ``length`` are dropped.
        length: number of tokens kept.
        self_loops: put ones on the diagonal.
        symmetric: add the reverse of every edge.

    Returns:
        (length, length) float32 with 1 where an edge exists.
    """
    adj = np.zeros((length, length), dtype=np.float32)
    for head, dep, _ in edges:
        if head < length and dep < length:
            adj[head, dep] = 1.0
            if symmetric:
                adj[dep, head] = 1.0
    if self_loops:
        np.fill_diagonal(adj, 1.0)
    return adj
