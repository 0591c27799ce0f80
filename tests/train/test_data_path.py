"""The training data path gives the model the same values as the plain NumPy recipe, and its batches leave
a DataLoader worker in shared memory (no second copy on the way to the training process)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from extract.reader import FeatureReader, write_feature_dir
from pipelines.text import EncodedMoments, EncodedSplit
from train.data import QACollate, QADataset, feature_statistics, to_float32
from train.moments import MomentCollate, MomentDataset, Projection, model_view, resample_steps


def _split(video_ids: list[str]) -> EncodedSplit:
    q = len(video_ids)
    return EncodedSplit(qids=[f"q{i}" for i in range(q)], video_ids=video_ids, qtypes=["what"] * q,
                        questions=np.ones((q, 5), np.int64), question_len=np.full(q, 3), candidates=None,
                        candidates_len=None, answers=np.zeros(q, np.int64),
                        answer_text=["a"] * q)  # fmt: skip


def _features(tmp_path, dtype: str):
    rng = np.random.default_rng(0)
    scale = {"float16": 100.0, "float32": 1e3, "float64": 1e5}[dtype]  # values far from the mean too
    items = {f"v{i}": {"appearance": (rng.standard_normal((4, 6)) * scale + 7).astype(dtype),
                       "motion": (rng.standard_normal((4, 5)) * 3).astype(dtype)}
             for i in range(6)}  # fmt: skip
    return write_feature_dir(tmp_path / dtype, "mspan", items, provenance={}, shard_size=4), items


@pytest.mark.parametrize("dtype", ["float16", "float32", "float64"])
def test_items_hold_exactly_the_numpy_recipe_values(tmp_path, dtype):
    out, items = _features(tmp_path, dtype)
    reader = FeatureReader(out)
    stats = feature_statistics(reader, reader.ids[:4], ("appearance",))
    ds = QADataset(_split(reader.ids), reader, feature_keys=("appearance", "motion"), feature_stats=stats)
    mean, std = stats["appearance"]
    for i, vid in enumerate(reader.ids):
        item = ds[i]
        want = (items[vid]["appearance"].astype(np.float32) - mean) / std  # the recipe before the change
        assert item["appearance"].dtype == torch.float32
        assert np.array_equal(item["appearance"].numpy(), want)  # bit for bit
        assert np.array_equal(item["motion"].numpy(), items[vid]["motion"].astype(np.float32))


def test_to_float32_equals_astype_for_every_float16():
    every = np.arange(1 << 16, dtype=np.uint16).view(np.float16)
    finite = every[np.isfinite(every)]
    assert np.array_equal(to_float32(finite).view(np.uint32), finite.astype(np.float32).view(np.uint32))
    wide = np.random.default_rng(0).standard_normal(1000) * 1e30
    assert np.array_equal(to_float32(wide), wide.astype(np.float32))
    same = np.ones(3, np.float32)
    assert to_float32(same) is same


def test_moment_view_equals_the_numpy_recipe(tmp_path):
    rng = np.random.default_rng(0)
    clips = (rng.standard_normal((37, 6)) * 50).astype(np.float16)
    stats = (rng.standard_normal(6).astype(np.float32), rng.uniform(0.5, 2, 6).astype(np.float32))
    proj = Projection(rng.standard_normal(6), rng.standard_normal((6, 4)))
    got = model_view(clips, num_steps=10, projection=proj, feature_stats=stats, center=True)
    x = (clips.astype(np.float32) - stats[0]) / stats[1]
    x = x - x.mean(0, keepdims=True)
    want = resample_steps(proj(x), 10)
    assert np.array_equal(got, want)


class _Recording:
    """A collate that notes, inside the worker, whether the batch's feature tensors are in shared memory."""

    def __init__(self, collate, keys: tuple[str, ...]) -> None:
        self.collate, self.keys = collate, keys

    def __call__(self, items):
        batch = self.collate(items)
        batch["made_shared"] = torch.tensor([batch[k].is_shared() for k in self.keys])
        return batch


def test_feature_batches_are_built_in_shared_memory_inside_a_worker(tmp_path):
    out, items = _features(tmp_path, "float16")
    reader = FeatureReader(out)
    ds = QADataset(_split(reader.ids), reader, feature_keys=("appearance", "motion"))
    collate = _Recording(QACollate(), ("appearance", "motion"))
    loader = DataLoader(ds, batch_size=3, num_workers=1, collate_fn=collate)
    batches = list(loader)
    assert all(b["made_shared"].all() for b in batches)
    got = torch.cat([b["appearance"] for b in batches]).numpy()
    assert np.array_equal(got, np.stack([items[v]["appearance"].astype(np.float32) for v in reader.ids]))
    in_process = QACollate()([ds[0], ds[1]])  # outside a worker: ordinary memory
    assert not in_process["appearance"].is_shared()


def test_moment_batches_are_built_in_shared_memory_inside_a_worker(tmp_path):
    rng = np.random.default_rng(0)
    items = {f"v{i}": {"clips": rng.standard_normal((3 + i, 4)).astype(np.float16)} for i in range(4)}
    reader = FeatureReader(write_feature_dir(tmp_path / "m", "cmin", items, provenance={}, ragged=["clips"]))
    split = EncodedMoments(qids=list("abcd"), video_ids=reader.ids, query_text=["q"] * 4,
                           queries=np.ones((4, 3), np.int64), query_len=np.full(4, 3),
                           start_s=np.zeros(4), end_s=np.ones(4), duration_s=np.full(4, 5.0))  # fmt: skip
    ds = MomentDataset(split, [[]] * 4, {}, reader, num_steps=5)
    loader = DataLoader(ds, batch_size=2, num_workers=1, collate_fn=_Recording(MomentCollate(), ("clips",)))
    batches = list(loader)
    assert all(b["made_shared"].all() for b in batches)
    want = np.stack([resample_steps(items[v]["clips"].astype(np.float32), 5) for v in reader.ids])
    assert np.array_equal(torch.cat([b["clips"] for b in batches]).numpy(), want)

