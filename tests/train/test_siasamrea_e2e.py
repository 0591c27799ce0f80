"""SiaSamRea end to end from raw frames (``model.input=frames``, issue 27; ``train/frames.py``).

Data: the demo's How2QA- and ActivityNet-QA-layout sets (``pipelines.demo.generate_demo``), trained with a
random ResNet-18 at 32 px and a tiny BERT written here with ``save_pretrained`` (as
``tests/train/test_text_encoder.py`` does). Every run goes through ``train.runner.run`` in a subprocess
(the SIGKILL test kills one).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import torch

transformers = pytest.importorskip("transformers")

from extract.video import Video, VideoDecodeError  # noqa: E402
from models.siasamrea import SiaSamReaConfig  # noqa: E402
from pipelines.demo import generate_demo  # noqa: E402
from pipelines.videowrite import write_video  # noqa: E402
from train.checkpoint import load_checkpoint  # noqa: E402
from train.frames import ClipSeedSampler, FrameCollate, FrameQADataset, item_seed  # noqa: E402

WORDS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "what", "colour", "color", "is", "the", "object", "in",
         "this", "clip", "?", "red", "green", "blue", "yellow", "magenta", "cyan", "square", "circle",
         "triangle", "cross"]

#: the run script: ``python RUN.py ROOT DATASET OUT BERT SEED EPOCHS [--resume]`` -> metrics.json
RUN = '''
import sys
from pathlib import Path
from models.siasamrea import SiaSamReaConfig
from train.config import TrainConfig, build_config
from train.runner import RunSpec, run
root, dataset, out, bert, seed, epochs = sys.argv[1:7]
model = build_config(SiaSamReaConfig, dict(
    input="frames", backbone="resnet18", backbone_weights="random", frame_size=32, hidden_dim=32,
    num_heads=2, num_layers=1, clip_frames=2, frame_interval=2, siamese_shift=2, num_siamese=2,
    affinity_dim=8, text_encoder="transformer", text_encoder_path=bert, text_max_len=24,
    subtitle_max_len=8, dropout=0.0), section="model")
train = build_config(TrainConfig, dict(epochs=int(epochs), batch_size=8, seed=int(seed), lr=1e-3,
                                       num_workers=int(sys.argv[7]), amp="fp32"), section="train")
run(RunSpec(model="siasamrea", dataset=dataset, task=None, root=Path(root), features=Path(root),
            out=Path(out), train=train, model_config=model, device="cpu", show_progress=False, threads=1,
            resume="--resume" in sys.argv))
'''


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    base = tmp_path_factory.mktemp("e2e")
    generate_demo(base / "demo", seed=0, scale=0.5)
    bert = base / "bert" / "model"
    bert.mkdir(parents=True)
    (bert.parent / "vocab.txt").write_text("\n".join(WORDS) + "\n")
    tokenizer = transformers.BertTokenizer(str(bert.parent / "vocab.txt"))
    torch.manual_seed(0)
    cfg = transformers.BertConfig(vocab_size=len(WORDS), hidden_size=32, num_hidden_layers=2,
                                  num_attention_heads=2, intermediate_size=64, max_position_embeddings=64)
    transformers.BertModel(cfg).save_pretrained(bert)
    tokenizer.save_pretrained(bert)
    (base / "run.py").write_text(RUN)
    return base


def _command(demo: Path, dataset: str, root: Path, out: Path, *, seed: int = 0, epochs: int = 2,
             workers: int = 0, resume: bool = False) -> list[str]:
    return [sys.executable, str(demo / "run.py"), str(root), dataset, str(out), str(demo / "bert" / "model"),
            str(seed), str(epochs), str(workers), *(["--resume"] if resume else [])]


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), "OMP_NUM_THREADS": "1"}


def _train(demo: Path, dataset: str, root: Path, out: Path, **kw) -> dict:
    proc = subprocess.run(_command(demo, dataset, root, out, **kw), env=_env(), capture_output=True,
                          text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads((out / "metrics.json").read_text())


def _config(**kw) -> SiaSamReaConfig:
    return SiaSamReaConfig(input="frames", backbone="resnet18", frame_size=32, clip_frames=2,
                           frame_interval=2, siamese_shift=2, **kw)


class _Questions:
    """A one-question stand-in for the QADataset underneath (``video_id`` and ``segment`` are read)."""

    qids = ["q0"]

    def __len__(self) -> int:
        return 1

    def __getitem__(self, index: int) -> dict:
        return {"qid": "q0", "video_id": "long", "qtype": "t", "answer_text": "a", "answer": 0,
                "question": torch.tensor([1, 2]), "question_len": 2}


def test_a_long_video_decodes_only_the_sampled_frames(tmp_path, monkeypatch):
    """5000 frames (200 s at 25 fps, 64 px): an item asks the reader for its K x Bf frames and nothing else,
    and its Python allocations stay far below the decoded video (5000 x 32 x 32 x 3 = 15 MB)."""
    frames = np.zeros((5000, 64, 64, 3), np.uint8)
    frames[:, :, :, 0] = (np.arange(5000) % 251)[:, None, None]
    path = write_video(tmp_path / "long.mp4", frames, fps=25.0)
    del frames
    asked: list[np.ndarray] = []
    read = Video.read
    monkeypatch.setattr(Video, "read", lambda self, idx: asked.append(np.asarray(idx)) or read(self, idx))
    ds = FrameQADataset(_Questions(), {"long": path}, _config(num_siamese=3), train=True)
    tracemalloc.start()
    item = ds[(0, 123)]
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert item["clips"].shape == (4, 2, 32, 32, 3) and item["clip_index"].shape == (4, 2)
    assert len(asked) == 1 and len(asked[0]) == 4 * 2  # one read, of the sampled frames only
    assert sorted(asked[0].tolist()) == sorted(item["clip_index"].reshape(-1).tolist())
    assert item["clip_index"].max() < 5000 and item["clip_valid"].all()
    assert peak < 2_000_000, peak  # the whole video decoded at 32 px would be 15 MB
    # the same seed draws the same clips (whatever worker decodes it); another seed other clips
    again = ds[(0, 123)]
    assert torch.equal(again["clip_index"], item["clip_index"]) and torch.equal(again["clips"], item["clips"])
    others = [ds[(0, s)]["clip_index"] for s in range(5)]
    assert any(not torch.equal(o, item["clip_index"]) for o in others)


def test_clip_seeds_follow_seed_epoch_and_index():
    sampler = ClipSeedSampler(range(6), num_replicas=1, rank=0, shuffle=True, seed=3)
    sampler.set_epoch(2)
    got = list(sampler)
    assert sorted(i for i, _ in got) == list(range(6))
    assert all(s == item_seed(3, 2, i) for i, s in got)
    assert item_seed(3, 2, 1) != item_seed(3, 1, 1) != item_seed(4, 1, 1)


def test_a_video_failing_in_a_worker_is_left_out_of_the_batch(tmp_path):
    """A video that fails while decoding gives no item, and the collate leaves it out (never zeros)."""
    good = write_video(tmp_path / "good.mp4", np.full((20, 64, 64, 3), 90, np.uint8), fps=5.0)
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"\x00not a video" * 100)
    q = _Questions()
    ds_good = FrameQADataset(q, {"long": good}, _config(num_siamese=0), train=False)
    ds_bad = FrameQADataset(q, {"long": bad}, _config(num_siamese=0), train=False)
    assert ds_bad[0] is None
    batch = FrameCollate()([ds_good[0], ds_bad[0], ds_good[0]])
    assert batch["clips"].shape == (2, 1, 2, 32, 32, 3)
    assert (batch["clips"] > 0).all()
    with pytest.raises(Exception, match="failed to decode"):
        FrameCollate()([None, None])
    with pytest.raises(VideoDecodeError):
        ds_bad.read_clips("long", None, None)


def test_an_unreadable_training_video_is_skipped_and_counted(demo, tmp_path):
    root = Path(shutil.copytree(demo / "demo" / "activitynet-qa", tmp_path / "activitynet-qa"))
    first = json.loads((root / "train_q.json").read_text())[0]["video_name"]
    video = next((root / "videos").glob(f"*{first}*"))
    video.write_bytes(b"garbage" * 50)
    got = _train(demo, "activitynet-qa", root, tmp_path / "run", epochs=1)
    assert got["dropped_questions"]["train"]["unreadable_video"] == 1
    log = (tmp_path / "run" / "train.log").read_text()
    assert "unreadable" in log and first in log


def test_sigkill_then_resume_equals_an_uninterrupted_run(demo, tmp_path):
    root = demo / "demo" / "how2qa"
    want = _train(demo, "how2qa", root, tmp_path / "full", epochs=3, workers=1)
    part = tmp_path / "part"
    proc = subprocess.Popen(_command(demo, "how2qa", root, part, epochs=3, workers=1), env=_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 300
    while not (part / "checkpoints" / "epoch-0001.pt").exists() and time.time() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert not (part / "checkpoints" / "epoch-0003.pt").exists()
    got = _train(demo, "how2qa", root, part, epochs=3, workers=1, resume=True)
    assert got["val"] == want["val"] and got["test"] == want["test"]
    assert got["best_checkpoint_sha256"] == want["best_checkpoint_sha256"]
    a = load_checkpoint(tmp_path / "full" / "checkpoints" / "epoch-0003.pt")["model"]
    b = load_checkpoint(part / "checkpoints" / "epoch-0003.pt")["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert "frames" == got["provenance"]["features"]["feature_set"]
    assert got["provenance"]["features"]["random_weights"] is True
