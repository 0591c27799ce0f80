"""GloVe / word2vec loading: both formats, 840B-style words with spaces, cache hit and invalidation."""

from __future__ import annotations

import logging
import os
import struct

import numpy as np
import pytest

from pipelines import glove as glove_module
from pipelines.glove import GloveFormatError, glove_cache_path, load_embeddings, read_vectors

VOCAB = ["<pad>", "<unk>", "the", "dog", "apple", "runs", "zzzmissing"]
VECTORS = {
    "the": [0.1, -0.2, 0.3, 0.4],
    "dog": [1.0, 2.0, 3.0, 4.0],
    "Apple": [-1.5, 0.25, 0.0, 9.0],   # cased entry, matched case-insensitively
    "apple": [5.0, 5.0, 5.0, 5.0],     # exact entry wins over "Apple" although it comes later
    "runs": [0.5, 0.5, -0.5, -0.5],
    "at&t . com": [7.0, 7.0, 7.0, 7.0],  # 840B has words with spaces: last D fields are the vector
    "cat": [3.0, 3.0, 3.0, 3.0],
}


def write_text(path, header=False):
    lines = [f"{len(VECTORS)} 4"] if header else []
    lines += [w + " " + " ".join(repr(v) for v in vec) for w, vec in VECTORS.items()]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def write_binary(path):
    with open(path, "wb") as fh:
        fh.write(f"{len(VECTORS)} 4\n".encode())
        for word, vec in VECTORS.items():
            if " " in word:
                word = word.replace(" ", "_")  # word2vec binary words never contain spaces
            fh.write(word.encode() + b" " + struct.pack("<4f", *vec) + b"\n")
    return path


@pytest.mark.parametrize("fmt", ["glove-text", "word2vec-text", "word2vec-binary"])
def test_both_formats_give_the_same_vectors(tmp_path, fmt, caplog):
    if fmt == "word2vec-binary":
        path = write_binary(tmp_path / "vectors.bin")
    else:
        path = write_text(tmp_path / "vectors.txt", header=fmt == "word2vec-text")
    found, dim, how = read_vectors(path, VOCAB)
    assert how == fmt and dim == 4
    assert set(found) == {"the", "dog", "apple", "runs"}
    assert found["apple"].tolist() == [5.0, 5.0, 5.0, 5.0] and found["dog"].tolist() == [1.0, 2.0, 3.0, 4.0]
    with caplog.at_level(logging.INFO):
        matrix = load_embeddings(VOCAB, path, cache_dir=tmp_path / "cache")
    assert matrix.shape == (7, 4) and matrix.dtype == np.float32
    assert matrix[0].tolist() == [0.0] * 4  # <pad>
    np.testing.assert_allclose(matrix[2], VECTORS["the"], rtol=1e-6)
    assert "4/5 vocabulary words found" in caplog.text and "1 initialised randomly" in caplog.text
    assert "zzzmissing" in caplog.text


def test_word_with_spaces_and_case_fallback(tmp_path):
    path = write_text(tmp_path / "glove.840B.300d.txt")
    found, dim, _ = read_vectors(path, ["at&t . com", "cat", "apple"])
    assert dim == 4 and found["at&t . com"].tolist() == [7.0] * 4 and found["cat"].tolist() == [3.0] * 4
    only_cased = tmp_path / "cased.txt"
    only_cased.write_text("Apple 1 2 3 4\nDOG 5 6 7 8\ndog 9 9 9 9\n")
    found, _, _ = read_vectors(only_cased, ["apple", "dog"])
    assert found["apple"].tolist() == [1, 2, 3, 4] and found["dog"].tolist() == [9, 9, 9, 9]


def test_missing_words_are_seeded_random(tmp_path):
    path = write_text(tmp_path / "g.txt")
    a = load_embeddings(VOCAB, path, cache_dir=tmp_path / "c1", seed=3)
    b = load_embeddings(VOCAB, path, cache_dir=tmp_path / "c2", seed=3)
    c = load_embeddings(VOCAB, path, cache_dir=tmp_path / "c3", seed=4)
    assert np.array_equal(a, b) and not np.array_equal(a[6], c[6])
    assert np.abs(a[6]).sum() > 0 and np.abs(a[1]).sum() > 0  # zzzmissing, <unk>
    assert np.array_equal(a[3], c[3])  # found words do not depend on the seed


def test_cache_hit_and_invalidation(tmp_path, monkeypatch):
    path = write_text(tmp_path / "g.txt")
    first = load_embeddings(VOCAB, path, cache_dir=tmp_path / "cache")
    cache = glove_cache_path(VOCAB, path, cache_dir=tmp_path / "cache")
    assert cache.is_file()

    def no_read(*args, **kwargs):
        raise AssertionError("GloVe file read again")

    monkeypatch.setattr(glove_module, "read_vectors", no_read)
    assert np.array_equal(load_embeddings(VOCAB, path, cache_dir=tmp_path / "cache"), first)
    # a different vocabulary is a different cache entry (and reads the file)
    with pytest.raises(AssertionError, match="read again"):
        load_embeddings(VOCAB + ["cat"], path, cache_dir=tmp_path / "cache")
    monkeypatch.undo()
    # a changed file (size and mtime) invalidates the cache
    path.write_text(path.read_text().replace("1.0 2.0 3.0 4.0", "8.0 8.0 8.0 8.00"))
    os.utime(path, ns=(1, 1))
    assert glove_cache_path(VOCAB, path, cache_dir=tmp_path / "cache") != cache
    changed = load_embeddings(VOCAB, path, cache_dir=tmp_path / "cache")
    assert changed[3].tolist() == [8.0] * 4 and first[3].tolist() == [1.0, 2.0, 3.0, 4.0]
    assert len(list((tmp_path / "cache").glob("glove-*.npz"))) == 2


def test_malformed_files_name_the_line(tmp_path):
    bad = tmp_path / "bad.txt"
    bad.write_text("the 1 2 3 4\ndog 1 2 3 4\nrun 1 2\nx 1 2 3 4\n")
    with pytest.raises(GloveFormatError, match=r"bad.txt: line 3: 2 values where 4 were expected"):
        read_vectors(bad, ["the"])
    nonnum = tmp_path / "nonnum.txt"
    nonnum.write_text("the 1 2 3 4\ndog 1 2 x 4\n")
    with pytest.raises(GloveFormatError, match=r"nonnum.txt: line 2: non-numeric"):
        read_vectors(nonnum, ["dog"])
    truncated = tmp_path / "t.bin"
    body = b"the " + struct.pack("<4f", 1, 2, 3, 4) + b"\ndog " + struct.pack("<2f", 1, 2)
    truncated.write_bytes(b"2 4\n" + body)
    with pytest.raises(GloveFormatError, match=r"t.bin: record 1 \('dog'\): truncated"):
        read_vectors(truncated, ["dog"])
    with pytest.raises(FileNotFoundError, match="absent.txt"):
        load_embeddings(VOCAB, tmp_path / "absent.txt", cache_dir=tmp_path)


def test_binary_reader_streams_across_block_boundaries(tmp_path, monkeypatch):
    rng = np.random.default_rng(0)
    words = [f"w{i}" for i in range(300)]
    vecs = rng.normal(size=(300, 50)).astype(np.float32)
    path = tmp_path / "big.bin"
    with open(path, "wb") as fh:
        fh.write(b"300 50\n")
        for w, v in zip(words, vecs, strict=True):
            fh.write(w.encode() + b" " + v.astype("<f4").tobytes())  # no newline between records
    monkeypatch.setattr(glove_module, "_BLOCK", 97)  # records straddle many block boundaries
    found, dim, how = read_vectors(path, ["w0", "w137", "w299"])
    assert how == "word2vec-binary" and dim == 50
    assert np.array_equal(found["w137"], vecs[137]) and np.array_equal(found["w299"], vecs[299])
    assert np.array_equal(found["w0"], vecs[0])


@pytest.mark.parametrize(
    "line, message",
    [
        ("dog 1.0 2.0 3.0 4.0 5.0", r"line 2: 5 values where 4 were expected"),  # one value too many
        ("dog 1.0 nan 3.0 4.0", r"line 2: NaN or infinite value in the vector of 'dog'"),
        ("dog 1.0 inf 3.0 4.0", r"line 2: NaN or infinite value"),
        ("dog 1.0 2.0 x 4.0", r"line 2: non-numeric value in the vector of 'dog'"),
        ("dog 1.0 2.0 3.0", r"line 2: 3 values where 4 were expected"),  # wrong dimension
    ],
)
def test_malformed_vectors_are_refused_with_file_and_line(tmp_path, line, message):
    path = tmp_path / "vec.txt"
    path.write_text(f"the 0.1 0.2 0.3 0.4\n{line}\ncat 1.0 1.0 1.0 1.0\nrun 2.0 2.0 2.0 2.0\n")
    with pytest.raises(GloveFormatError, match="vec.txt: " + message):
        load_embeddings(VOCAB, path, cache_dir=tmp_path / "cache", dim=4)


def test_coverage_is_reported_and_cached(tmp_path):
    path = write_text(tmp_path / "vectors.txt")
    for _ in range(2):  # built, then read from the cache: the same info
        _, info = glove_module.load_embeddings_info(VOCAB, path, cache_dir=tmp_path / "cache")
        assert (info.found, info.words, info.dim) == (4, 5, 4)  # <pad> and <unk> are not counted
        assert info.coverage == pytest.approx(0.8) and info.missing_examples == ("zzzmissing",)
        assert info.to_json()["coverage"] == 0.8
    none = tmp_path / "other.txt"
    none.write_text("xx 1.0 1.0 1.0 1.0\nyy 2.0 2.0 2.0 2.0\n")
    _, info = glove_module.load_embeddings_info(VOCAB, none, cache_dir=tmp_path / "cache")
    assert info.found == 0 and info.coverage == 0.0
