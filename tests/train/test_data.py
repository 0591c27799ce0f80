"""QADataset + QACollate over real pieces: TGIF CSVs -> adapter -> prepare_qa, features -> FeatureReader."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from extract.reader import FeatureReader, write_feature_dir
from pipelines.datasets import get_dataset
from pipelines.text import prepare_qa
from train.data import (
    FeatureMismatchError,
    QACollate,
    QADataset,
    check_feature_set,
    find_missing_videos,
)


@pytest.fixture(scope="module")
def prepared(tiny_tgif, tmp_path_factory):
    cache = tmp_path_factory.mktemp("text_cache")
    out = {}
    for task in ("frameqa", "action", "count"):
        adapter = get_dataset("tgif")(tiny_tgif.root, task=task)
        out[task] = prepare_qa(adapter, cache_dir=cache, answer_vocab_size=None)
    return out


def test_open_ended_batch_contract(tiny_tgif, prepared):
    reader = FeatureReader(tiny_tgif.features)
    split = prepared["frameqa"].splits["train"]
    ds = QADataset(split, reader, feature_keys=("appearance", "motion"))
    assert len(ds) == len(split.qids) == 32
    item = ds[0]
    assert item["qid"] == split.qids[0] and item["video_id"] == split.video_ids[0]
    assert item["question"].shape == (int(split.question_len[0]),)
    np.testing.assert_array_equal(item["appearance"].numpy(), reader[split.video_ids[0]]["appearance"])
    batch = QACollate()([ds[i] for i in range(5)])
    L = int(split.question_len[:5].max())
    assert batch["question"].shape == (5, L) and batch["question"].dtype == torch.int64
    assert batch["question_len"].tolist() == split.question_len[:5].tolist()
    for b in range(5):  # zero padding after the real tokens
        n = int(batch["question_len"][b])
        assert torch.all(batch["question"][b, n:] == 0) and torch.all(batch["question"][b, :n] > 0)
    assert batch["appearance"].shape == (5, 4, 8) and batch["appearance"].dtype == torch.float32
    assert batch["motion"].shape == (5, 4, 8)
    assert batch["answer"].dtype == torch.int64 and batch["answer"].tolist() == split.answers[:5].tolist()
    assert batch["qtype"] == ["color"] * 5 and batch["answer_text"][0] in ("red", "blue", "green", "yellow")
    assert "candidates" not in batch and "appearance_mask" not in batch


def test_mc_and_count_batches(tiny_tgif, prepared):
    reader = FeatureReader(tiny_tgif.features)
    mc = prepared["action"].splits["test"]
    batch = QACollate()([QADataset(mc, reader)[i] for i in range(3)])
    assert batch["candidates"].shape[:2] == (3, 5) and batch["candidates_len"].shape == (3, 5)
    assert batch["candidates"].shape[2] == int(mc.candidates_len[:3].max())
    cnt = prepared["count"].splits["val"]
    ds = QADataset(cnt, reader, indices=[1, 0])
    batch = QACollate(answer_dtype=torch.float32)([ds[0], ds[1]])
    assert batch["answer"].dtype == torch.float32
    assert batch["answer"].tolist() == [float(cnt.answers[1]), float(cnt.answers[0])]
    assert ds.qids == [cnt.qids[1], cnt.qids[0]]


def test_ragged_features_are_padded_with_a_mask():
    items = [
        {"qid": "a", "video_id": "v", "qtype": "", "answer_text": "x", "question": torch.tensor([3]),
         "question_len": 1, "answer": 0, "frames": torch.ones(n, 2)}
        for n in (3, 1)
    ]
    batch = QACollate(ragged_keys=("frames",))(items)
    assert batch["frames"].shape == (2, 3, 2)
    assert batch["frames_mask"].tolist() == [[True, True, True], [True, False, False]]
    assert batch["frames"][1, 1:].abs().sum() == 0
    with pytest.raises(FeatureMismatchError, match="different shapes within a batch"):
        QACollate()(items)


def test_dataset_pickles_into_workers(tiny_tgif, prepared):
    reader = FeatureReader(tiny_tgif.features)
    ds = QADataset(prepared["frameqa"].splits["test"], reader)
    _ = ds[0]  # opens an HDF5 handle in this process
    clone = pickle.loads(pickle.dumps(ds))
    assert torch.equal(clone[3]["appearance"], ds[3]["appearance"])
    loader = DataLoader(ds, batch_size=4, num_workers=1, collate_fn=QACollate())
    batches = list(loader)
    assert sum(len(b["qid"]) for b in batches) == len(ds)
    assert torch.equal(batches[0]["motion"][0], ds[0]["motion"])


def test_feature_set_and_missing_videos(tiny_tgif, tmp_path):
    reader = FeatureReader(tiny_tgif.features)
    check_feature_set(reader, "mspan", model="mspan")
    items = {"g000": {"motion_clips": np.zeros((8, 4), np.float32)}}
    other = write_feature_dir(tmp_path / "hcrn", "hcrn", items, provenance={})
    with pytest.raises(FeatureMismatchError, match="holds feature set 'hcrn' but model 'mspan' needs"):
        check_feature_set(FeatureReader(other), "mspan", model="mspan")
    assert find_missing_videos(["g000", "nope", "g001", "nope"], reader) == ["nope"]


class _CountingReader:
    """A reader that counts how often each video is read."""

    def __init__(self, reader):
        self.reader, self.reads = reader, 0

    def __getitem__(self, video_id):
        self.reads += 1
        return self.reader[video_id]


def test_features_are_read_once_per_video_within_the_cache_budget(tiny_tgif, prepared, monkeypatch):
    reader = FeatureReader(tiny_tgif.features)
    split = prepared["frameqa"].splits["train"]
    videos = len(set(split.video_ids))
    assert videos < len(split.qids)  # several questions per video
    counting = _CountingReader(reader)
    ds = QADataset(split, counting, feature_keys=("appearance", "motion"))
    uncached = QADataset(split, reader, feature_keys=("appearance", "motion"))
    monkeypatch.setattr(uncached, "cache_bytes", 0)
    for _ in range(2):  # two epochs
        for i in range(len(ds)):
            for key in ("appearance", "motion"):
                torch.testing.assert_close(ds[i][key], uncached[i][key], rtol=0, atol=0)
    assert counting.reads == videos
    assert uncached._cache == {}
    batch = QACollate()([ds[0], ds[0]])  # a batch owns its memory: editing it leaves the cache intact
    batch["appearance"].add_(1.0)
    torch.testing.assert_close(ds[0]["appearance"], uncached[0]["appearance"], rtol=0, atol=0)
