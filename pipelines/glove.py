"""Word embeddings for a vocabulary from a local GloVe / word2vec file, streamed and cached.

Formats (detected from the file, not its name):

- GloVe text (``glove.840B.300d.txt``, ``glove.6B.300d.txt``, ...): one ``word v1 ... vD`` line per
  word. In 840B a few "words" contain spaces, so a line is split from the right: the last D fields
  are the vector, everything before them is the word. D is the most common field count minus one
  over the first lines (pass ``dim`` to force it).
- word2vec text: the same, after a ``<count> <dim>`` header line.
- word2vec binary (``GoogleNews-vectors-negative300.bin``): a ``<count> <dim>`` header line, then
  per word ``word<space>`` followed by ``dim`` little-endian float32 values (optionally a newline).

The file is read once, line by line (never whole in memory); only the vectors of vocabulary words
are kept. A word is matched exactly first; failing that, the first entry whose lower-cased form
equals it (840B is cased, the toolkit's tokens are lower case). Words not found are initialised
from a seeded normal distribution with the standard deviation of the found vectors, and their number
is logged. Index 0 (``<pad>``) is all zeros.

A malformed line stops the load with one line naming the file and the line: too few values, a value
more than the dimension (a number where an 840B multi-word token would continue), a non-numeric, NaN
or infinite value. :func:`load_embeddings_info` also returns a :class:`GloveInfo` with the coverage
(vocabulary words found / vocabulary words, ``<pad>`` and ``<unk>`` not counted), which training logs,
records and checks.

The matrix is cached as ``<cache_dir>/glove-<key>.npz`` where the key hashes the vocabulary, the
file identity (resolved path, size, modification time), the seed and ``dim``: a second call with the
same vocabulary and file reads only the cache; a changed file or vocabulary builds a new one.

Which GloVe: the papers reproduced here use 300-d GloVe (840B Common Crawl for HCRN/MSPAN/MASN,
6B or 840B elsewhere); the file used is recorded in the cache metadata.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import zipfile
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np

from pipelines.atomic import atomic_path

__all__ = [
    "GloveFormatError",
    "GloveInfo",
    "glove_cache_path",
    "load_embeddings",
    "load_embeddings_info",
    "read_vectors",
]

log = logging.getLogger(__name__)

_CACHE_VERSION = 1
_BLOCK = 1 << 20  # bytes read at a time from a word2vec binary file
_HEADER = re.compile(rb"^\s*(\d+)\s+(\d+)\s*$")
_SPECIALS = ("<pad>", "<unk>")


class GloveFormatError(ValueError):
    """The embedding file is neither GloVe text nor word2vec text/binary (message names file and line)."""


@dataclass(frozen=True)
class GloveInfo:
    """What an embedding file gave a vocabulary: ``found`` of ``words`` (specials not counted)."""

    file: str
    format: str
    dim: int
    found: int
    words: int
    missing_examples: tuple[str, ...] = ()

    @property
    def coverage(self) -> float:
        """``found / words`` (1.0 for a vocabulary of specials only)."""
        return self.found / self.words if self.words else 1.0

    def to_json(self) -> dict:
        """Plain values (str, int, float, list) for configs, metrics and checkpoints."""
        out = asdict(self)
        out["missing_examples"] = list(self.missing_examples)
        out["coverage"] = round(self.coverage, 6)
        return out


def _identity(path: Path) -> list:
    stat = path.stat()
    return [str(path.resolve()), stat.st_size, stat.st_mtime_ns]


def glove_cache_path(
    vocab: Sequence[str], path: str | os.PathLike, *, cache_dir: str | os.PathLike, seed: int = 0,
    dim: int | None = None,
) -> Path:
    """The cache file that :func:`load_embeddings` uses for this vocabulary and embedding file."""
    path = Path(path)
    key = json.dumps({"version": _CACHE_VERSION, "vocab": list(vocab), "file": _identity(path), "seed": seed,
                      "dim": dim})
    return Path(cache_dir) / f"glove-{hashlib.sha256(key.encode()).hexdigest()[:24]}.npz"


def load_embeddings(
    vocab: Sequence[str], path: str | os.PathLike, *, cache_dir: str | os.PathLike, seed: int = 0,
    dim: int | None = None,
) -> np.ndarray:
    """The embedding matrix of ``vocab``; see :func:`load_embeddings_info` (this drops the info)."""
    return load_embeddings_info(vocab, path, cache_dir=cache_dir, seed=seed, dim=dim)[0]


def load_embeddings_info(
    vocab: Sequence[str], path: str | os.PathLike, *, cache_dir: str | os.PathLike, seed: int = 0,
    dim: int | None = None,
) -> tuple[np.ndarray, GloveInfo]:
    """The embedding matrix of ``vocab`` from a GloVe text or word2vec file (cached), and its coverage.

    Args:
        vocab: the words; index 0 is treated as padding (zero vector) when it is ``"<pad>"``.
        path: GloVe text or word2vec text/binary file.
        cache_dir: where the cache NPZ goes.
        seed: seed of the random initialisation of words not in the file.
        dim: vector size; detected from the file when ``None``.

    Returns:
        (V, D) float32 matrix, V = len(vocab), and a :class:`GloveInfo`.

    Raises:
        FileNotFoundError: the file does not exist.
        GloveFormatError: a malformed line (file and line named) or a dim mismatch.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"GloVe file {path} not found; pass a local glove.*.txt or word2vec .bin file"
        )
    words = sum(1 for w in vocab if w not in _SPECIALS)
    cache = glove_cache_path(vocab, path, cache_dir=cache_dir, seed=seed, dim=dim)
    if cache.is_file():
        try:
            with np.load(cache, allow_pickle=False) as data:
                matrix = data["matrix"]
                meta = json.loads(str(data["meta"]))
            info = GloveInfo(str(path), meta["format"], int(meta["dim"]), int(meta["found"]), words,
                             tuple(meta.get("missing_examples", ())))
        except (OSError, ValueError, KeyError, zipfile.BadZipFile) as exc:
            log.warning("GloVe cache %s unreadable (%s); rebuilding", cache, exc)
        else:
            if matrix.shape[0] == len(vocab):
                log.info("GloVe: cache %s (%d/%d words found in %s)", cache, info.found, words, path)
                return matrix, info
    vocab = list(vocab)
    found_vectors, file_dim, how = read_vectors(path, vocab, dim=dim)
    matrix, _ = _assemble(vocab, found_vectors, file_dim, seed)
    missing = [w for w in vocab if w not in found_vectors and w not in _SPECIALS]
    n_found = words - len(missing)
    log.info(
        "GloVe: %d/%d vocabulary words found in %s (%s, dim %d); %d initialised randomly (seed %d)%s",
        n_found, words, path, how, file_dim, len(missing), seed,
        f", e.g. {', '.join(missing[:10])}" if missing else "",
    )
    meta = {"file": _identity(path), "format": how, "dim": file_dim, "found": n_found,
            "missing": len(missing), "seed": seed, "missing_examples": missing[:10]}
    with atomic_path(cache) as tmp:
        with open(tmp, "wb") as fh:
            np.savez(fh, matrix=matrix, meta=np.array(json.dumps(meta)))
    return matrix, GloveInfo(str(path), how, file_dim, n_found, words, tuple(missing[:10]))


def _assemble(
    vocab: list[str], vectors: dict[str, np.ndarray], dim: int, seed: int
) -> tuple[np.ndarray, int]:
    found = [vectors[w] for w in vocab if w in vectors]
    scale = float(np.std(np.stack(found))) if found else 0.1
    scale = scale if scale > 0 else 0.1
    rng = np.random.default_rng(seed)
    matrix = rng.normal(0.0, scale, size=(len(vocab), dim)).astype(np.float32)
    for i, word in enumerate(vocab):
        if word in vectors:
            matrix[i] = vectors[word]
    if vocab and vocab[0] == "<pad>":
        matrix[0] = 0.0
    return matrix, len(found)


def read_vectors(
    path: str | os.PathLike, vocab: Sequence[str], *, dim: int | None = None
) -> tuple[dict[str, np.ndarray], int, str]:
    """Stream ``path`` and keep the vectors of the words in ``vocab``.

    Returns:
        (word -> (D,) float32 vector, D, format name) where the format is ``"glove-text"``,
        ``"word2vec-text"`` or ``"word2vec-binary"``.
    """
    path = Path(path)
    wanted = set(vocab)
    with open(path, "rb") as fh:
        first = fh.readline(1 << 20)
        header = _HEADER.match(first)
        if header:
            count, header_dim = int(header.group(1)), int(header.group(2))
            if dim is not None and dim != header_dim:
                raise GloveFormatError(f"{path}: line 1: header says dim {header_dim}, expected {dim}")
            start = fh.tell()
            binary = _looks_binary(fh, header_dim)
            fh.seek(start)
            if binary:
                return _read_binary(fh, path, wanted, count, header_dim), header_dim, "word2vec-binary"
            return _read_text(fh, path, wanted, header_dim, first_line=2), header_dim, "word2vec-text"
        fh.seek(0)
        if dim is None:
            dim = _detect_dim(fh, path)
            fh.seek(0)
        return _read_text(fh, path, wanted, dim, first_line=1), dim, "glove-text"


def _looks_binary(fh: BinaryIO, dim: int) -> bool:
    chunk = fh.read(4 * dim + 1024)
    line = chunk.split(b"\n", 1)[0]
    try:
        fields = line.decode("utf-8").rstrip().rsplit(" ", dim)
        if len(fields) != dim + 1:
            return True
        [float(v) for v in fields[1:]]
    except (UnicodeDecodeError, ValueError):
        return True
    return False


def _detect_dim(fh: BinaryIO, path: Path) -> int:
    counts: Counter[int] = Counter()
    for _ in range(50):
        line = fh.readline()
        if not line:
            break
        if line.strip():
            counts[len(line.rstrip().split(b" ")) - 1] += 1
    if not counts or counts.most_common(1)[0][0] < 1:
        raise GloveFormatError(f"{path}: line 1: not a GloVe text file; expected lines 'word v1 v2 ... vD'")
    return counts.most_common(1)[0][0]


def _read_text(
    fh: BinaryIO, path: Path, wanted: set[str], dim: int, *, first_line: int
) -> dict[str, np.ndarray]:
    exact: dict[str, np.ndarray] = {}
    lowered: dict[str, np.ndarray] = {}
    for number, raw in enumerate(fh, start=first_line):
        raw = raw.rstrip(b"\r\n").rstrip(b" ")
        if not raw:
            continue
        # Cheap path for the usual line (exactly `dim` spaces); a word with spaces (840B) is split
        # from the right. Vectors are parsed only for vocabulary words.
        spaces = raw.count(b" ")
        if spaces < dim:
            raise GloveFormatError(
                f"{path}: line {number}: {spaces} values where {dim} were expected; "
                f"expected lines 'word v1 ... v{dim}' (GloVe text) or a word2vec file"
            )
        cut = raw.index(b" ") if spaces == dim else len(raw.rsplit(b" ", dim)[0])
        if spaces > dim and all(_is_number(t) for t in raw.split(b" ", spaces - dim + 1)[1:-1]):
            # an 840B token with spaces continues with words (". . .", "at name@domain.com"); numbers
            # there are values too many
            raise GloveFormatError(
                f"{path}: line {number}: {spaces} values where {dim} were expected; "
                f"expected lines 'word v1 ... v{dim}'"
            )
        word = raw[:cut].decode("utf-8", errors="replace")
        if word in wanted:
            target = exact
        else:
            low = word.lower()
            if low not in wanted or low in exact or low in lowered:
                continue
            word, target = low, lowered
        parts = raw[cut + 1:].decode("utf-8", errors="replace").split(" ")
        try:
            vector = np.asarray(parts, dtype=np.float32)
        except ValueError:
            msg = f"{path}: line {number}: non-numeric value in the vector of {word!r}"
            raise GloveFormatError(msg) from None
        if not np.isfinite(vector).all():
            raise GloveFormatError(f"{path}: line {number}: NaN or infinite value in the vector of {word!r}")
        target[word] = vector
    for word, vec in lowered.items():
        exact.setdefault(word, vec)
    return exact


def _is_number(token: bytes) -> bool:
    try:
        float(token)
    except ValueError:
        return False
    return True


def _read_binary(fh: BinaryIO, path: Path, wanted: set[str], count: int, dim: int) -> dict[str, np.ndarray]:
    exact: dict[str, np.ndarray] = {}
    lowered: dict[str, np.ndarray] = {}
    nbytes = 4 * dim
    for index, (word, blob) in enumerate(_binary_entries(fh, nbytes)):
        if index >= count:
            break
        if len(blob) != nbytes:
            raise GloveFormatError(f"{path}: record {index} ({word!r}): truncated vector "
                                   f"({len(blob)} of {nbytes} bytes); expected a word2vec binary file")
        low = word.lower()
        if word in wanted or (low in wanted and low not in exact and low not in lowered):
            vector = np.frombuffer(blob, dtype="<f4").astype(np.float32)
            if not np.isfinite(vector).all():
                raise GloveFormatError(f"{path}: record {index} ({word!r}): NaN or infinite value")
            (exact if word in wanted else lowered)[word if word in wanted else low] = vector
    for word, vec in lowered.items():
        exact.setdefault(word, vec)
    return exact


def _binary_entries(fh: BinaryIO, nbytes: int) -> Iterator[tuple[str, bytes]]:
    """Yield (word, raw vector bytes) from a word2vec binary body, reading ``_BLOCK`` bytes at a time."""
    buf, pos, eof = b"", 0, False
    while True:
        while pos < len(buf) and buf[pos] in (10, 13):  # optional newline between records
            pos += 1
        space = buf.find(b" ", pos)
        if space < 0 or len(buf) < space + 1 + nbytes:
            if eof:
                if pos < len(buf):  # truncated last record: the caller reports it
                    end = space if space >= 0 else len(buf)
                    yield buf[pos:end].decode("utf-8", errors="replace"), buf[end + 1:]
                return
            block = fh.read(_BLOCK)
            eof = not block
            buf, pos = buf[pos:] + block, 0
            continue
        yield buf[pos:space].decode("utf-8", errors="replace"), buf[space + 1: space + 1 + nbytes]
        pos = space + 1 + nbytes
