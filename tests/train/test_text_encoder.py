"""SiaSamRea with a transformer question encoder read from a local Hugging Face checkpoint directory.

A tiny BERT (2 layers, hidden 32, random weights) and its WordPiece tokenizer (from a vocab.txt) are
written with ``save_pretrained`` into a temporary directory. Tiny How2QA-layout data: each video shows
one colour (``frames`` channel = the colour) and the question "what colour is it ?" has the four colours
as candidates in random order, so the model must read each question + candidate pair through the
transformer to answer (48 training videos with 2 questions each, 8 val and 8 test questions).
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

transformers = pytest.importorskip("transformers")

from extract.reader import FeatureReader, write_feature_dir  # noqa: E402
from models.siasamrea import SiaSamReaConfig, siasamrea  # noqa: E402
from train.cli import build_cli  # noqa: E402
from train.data import QACollate  # noqa: E402
from train.text_encoder import TextEncoderError, encode_questions, load_text_encoder  # noqa: E402

COLOURS = ("red", "blue", "green", "yellow")
DIM, FPS = 8, 4.0
WORDS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "what", "colour", "is", "it", "?", *COLOURS]
TINY = [
    "--set", "model.hidden_dim=16", "--set", "model.num_heads=2", "--set", "model.num_layers=1",
    "--set", "model.clip_frames=3", "--set", "model.frame_interval=1", "--set", "model.siamese_shift=2",
    "--set", "model.num_siamese=2", "--set", "model.affinity_dim=8",
    "--set", "model.text_encoder=transformer",
    "--set", "model.text_max_len=16", "--batch-size", "8", "--no-progress", "--device", "cpu",
    "--threads", "1",
]


def _bert(path: Path, seed: int = 0) -> Path:
    path.mkdir(parents=True)
    (path.parent / "vocab.txt").write_text("\n".join(WORDS) + "\n")
    tokenizer = transformers.BertTokenizer(str(path.parent / "vocab.txt"))
    torch.manual_seed(seed)
    cfg = transformers.BertConfig(vocab_size=len(WORDS), hidden_size=32, num_hidden_layers=2,
                                  num_attention_heads=2, intermediate_size=64, max_position_embeddings=32)
    transformers.BertModel(cfg).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    base = tmp_path_factory.mktemp("text-encoder")
    bert = _bert(base / "bert" / "model")
    root = base / "how2qa"
    root.mkdir()
    rng = np.random.default_rng(0)
    items, lines = {}, {"train": [], "val": [], "test": []}
    for i in range(64):
        split = "train" if i < 48 else "val" if i < 56 else "test"
        colour = i % 4
        x = 0.1 * rng.standard_normal((int(rng.integers(3, 7)), DIM)).astype(np.float32)
        x[:, colour] += 1.0
        items[f"vid{i:02d}"] = {"frames": x, "frame_times": (np.arange(len(x)) / FPS).astype(np.float32)}
        for k in range(2 if split == "train" else 1):
            cands = [COLOURS[j] for j in rng.permutation(4)]
            lines[split].append({"vid_name": f"vid{i:02d}", "ts": "0-1", "q": "what colour is it?",
                                 **{f"a{j}": c for j, c in enumerate(cands)},
                                 "answer_idx": cands.index(COLOURS[colour]), "qid": f"q{i}-{k}"})
    for split, rows in lines.items():
        (root / f"how2qa_{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    feats = write_feature_dir(base / "features", "siasamrea", items, provenance={"weights": "synthetic"},
                              ragged=("frames", "frame_times"))
    return root, Path(feats), bert


def _invoke(args: list[str]):
    return CliRunner().invoke(build_cli(), args, catch_exceptions=False)


def _run(data, out: Path, *extra: str, bert: Path | None = None, code: int = 0):
    root, features, default = data
    args = ["siasamrea", "--dataset", "how2qa", "--root", str(root), "--features", str(features),
            "--out", str(out), *TINY, "--set", f"model.text_encoder_path={bert or default}", *extra]
    res = _invoke(args)
    assert res.exit_code == code, res.output
    return json.loads((out / "metrics.json").read_text()) if code == 0 else res


def test_tokens_of_question_candidate_pairs(data):
    tok = load_text_encoder(data[2], max_len=16).tokenizer
    a, b = encode_questions(tok, ["what colour is it?", "what is it?"], [("red", "blue"), ("green", "x")], 16)
    w = {t: i for i, t in enumerate(WORDS)}
    q = [w["[CLS]"], w["what"], w["colour"], w["is"], w["it"], w["?"], w["[SEP]"]]
    assert a["text_ids"].tolist() == [q + [w["red"], w["[SEP]"]], q + [w["blue"], w["[SEP]"]]]
    assert a["text_type_ids"].tolist() == [[0] * 7 + [1, 1]] * 2 and a["text_mask"].all()
    assert b["text_ids"][1].tolist() == [w["[CLS]"], w["what"], w["is"], w["it"], w["?"], w["[SEP]"],
                                         w["[UNK]"], w["[SEP]"]]
    one = encode_questions(tok, ["what colour is it?"], [None], 4)[0]  # open-ended: one row, truncated
    assert one["text_ids"].tolist() == [q[:3] + [w["[SEP]"]]] and not one["text_type_ids"].any()


def test_one_step_fine_tunes_or_freezes_the_encoder(data):
    enc = load_text_encoder(data[2], max_len=16)
    items = []
    reader = FeatureReader(data[1])
    for i in range(2):
        f = reader[f"vid{i:02d}"]
        tokens = enc.tokens("what colour is it?", COLOURS)
        items.append({"qid": str(i), "video_id": "v", "qtype": "", "answer_text": "", "answer": i,
                      "question": torch.tensor([1]), "question_len": 1,
                      "candidates": torch.ones(4, 1, dtype=torch.int64),
                      "candidates_len": torch.ones(4, dtype=torch.int64),
                      "frames": torch.from_numpy(f["frames"]),
                      "frame_times": torch.from_numpy(f["frame_times"]),
                      **{k: torch.from_numpy(v) for k, v in tokens.items()}})
    batch = QACollate(("frames", "frame_times"))(items)
    assert batch["text_ids"].shape == (2, 4, 9) and batch["text_mask"].dtype == torch.bool
    for freeze in (False, True):
        cfg = SiaSamReaConfig(frames_dim=DIM, hidden_dim=16, num_heads=2, num_layers=1, clip_frames=3,
                              num_siamese=2, affinity_dim=8, text_encoder="transformer",
                              text_encoder_path=str(data[2]), freeze_text_encoder=freeze)
        model = siasamrea(cfg, vocab_size=2, num_answers=0, task_type="mc",
                          text_encoder=load_text_encoder(data[2]).model)
        model.train()
        assert model.text.encoder.training is not freeze
        before = {k: v.clone() for k, v in model.state_dict().items()}
        out = model(batch)
        assert out["scores"].shape == (2, 4)
        loss = torch.nn.functional.cross_entropy(out["scores"], batch["answer"])
        loss = loss + out["aux_losses"]["loss_siamese"]
        opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
        loss.backward()
        opt.step()
        after = model.state_dict()
        keys = [k for k in after if k.startswith("text.encoder.")]
        enc_changed = any(not torch.equal(before[k], after[k]) for k in keys)
        assert enc_changed is not freeze
        assert not torch.equal(before["text.proj.0.weight"], after["text.proj.0.weight"])


@pytest.mark.slow
def test_learns_resumes_and_records_the_directory(data, tmp_path):
    extra = ("--set", "train.lr=3e-3", "--set", "model.dropout=0.0", "--seed", "1")
    full, part = tmp_path / "full", tmp_path / "part"
    want = _run(data, full, "--epochs", "6", *extra)
    # chance is 0.25 (8 questions each). With the type embedding at N(0, 0.02) (issue 23) seeds 1-4 reach
    # val 0.875-1.0, test 0.875-1.0; seed 0 stays at 0.5 / 0.5 (also with 9 epochs, and with
    # gt_clips=anchor, knowledge_loss=siamese: its initialisation, not the losses)
    assert want["val"]["accuracy"] >= 0.75 and want["test"]["accuracy"] >= 0.625, want
    record = want["provenance"]["text_encoder"]
    assert record["fingerprint"].startswith("sha256:") and "model.safetensors" in record["files"]
    log = (full / "train.log").read_text()
    assert f"fingerprint {record['fingerprint']}" in log and "GloVe: not used" in log
    ckpt = torch.load(full / "checkpoints" / "best.pt", weights_only=True)
    assert ckpt["meta"]["provenance"]["text_encoder"] == record
    assert any(k.startswith("text.encoder.") for k in ckpt["model"])
    _run(data, part, "--epochs", "3", *extra)
    got = _run(data, part, "--epochs", "6", "--resume", *extra)
    assert got["val"] == want["val"] and got["test"] == want["test"]
    a = torch.load(full / "checkpoints" / "epoch-0006.pt", weights_only=True)["model"]
    b = torch.load(part / "checkpoints" / "epoch-0006.pt", weights_only=True)["model"]
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=1e-6, msg=k)


def _changed_copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    model = transformers.AutoModel.from_pretrained(str(dst), local_files_only=True)
    with torch.no_grad():
        model.embeddings.word_embeddings.weight[5] += 1.0
    model.save_pretrained(dst)
    return dst


def test_another_directory_is_refused_and_a_moved_copy_accepted(data, tmp_path, monkeypatch):
    run = tmp_path / "run"
    _run(data, run, "--epochs", "1")
    changed = _changed_copy(data[2], tmp_path / "changed")
    res = _run(data, run, "--epochs", "2", "--resume", bert=changed, code=2)
    assert "text encoder differs" in res.output and str(data[2].resolve()) in res.output
    assert str(changed) in res.output and "model.safetensors" in res.output
    assert "Traceback" not in res.output
    root, features, _ = data
    evaluate = ["siasamrea", "--dataset", "how2qa", "--root", str(root), "--features", str(features),
                "--out", str(tmp_path / "eval"), "--eval-only",
                "--checkpoint", str(run / "checkpoints/best.pt"),
                "--no-progress", "--device", "cpu"]
    res = _invoke([*evaluate, "--set", f"model.text_encoder_path={changed}"])
    assert res.exit_code == 2 and "--eval-only: the text encoder differs" in res.output
    moved = shutil.copytree(data[2], tmp_path / "moved")
    res = _invoke([*evaluate, "--set", f"model.text_encoder_path={moved}"])
    assert res.exit_code == 0, res.output
    # vqa-answer refuses the changed directory before anything else
    from train.tools.answer import Answerer, AnswerError

    with pytest.raises(AnswerError, match=r"vqa-answer: the text encoder differs.*recorded .*now .*changed"):
        Answerer.from_checkpoint(run / "checkpoints/best.pt", text_encoder=changed)
    with pytest.raises(AnswerError, match=r"--text-encoder=.*nowhere: not a directory"):
        Answerer.from_checkpoint(run / "checkpoints/best.pt", text_encoder=tmp_path / "nowhere")


def test_answerer_gives_the_runs_predictions(data, tmp_path, monkeypatch):
    run = tmp_path / "run"
    _run(data, run, "--epochs", "2")
    import train.tools.answer as answer

    reader = FeatureReader(data[1])

    class Frames:  # the recorded feature set stands in for the extraction (synthetic features here)
        outputs = reader.outputs

        def object_names(self, features):
            return None

    monkeypatch.setattr(answer.api, "rebuild_feature_set", lambda *a, **k: Frames())
    answerer = answer.Answerer.from_checkpoint(run / "checkpoints" / "best.pt")
    preds = [json.loads(x) for x in (run / "predictions_test.jsonl").read_text().splitlines()]
    lines = (data[0] / "how2qa_test.jsonl").read_text().splitlines()
    rows = {json.loads(x)["qid"]: json.loads(x) for x in lines}
    for p in preds:
        row = rows[p["qid"]]
        feats = answer.VideoFeatures(p["video_id"], dict(reader[p["video_id"]]))
        got = answerer.answer(feats, row["q"], candidates=[row[f"a{j}"] for j in range(4)])
        assert got.prediction == p["prediction"]


def test_missing_directory_or_package_is_one_line(data, tmp_path, monkeypatch):
    res = _run(data, tmp_path / "a", "--epochs", "1", bert=tmp_path / "nowhere", code=2)
    assert "model.text_encoder_path=" in res.output and "not a directory" in res.output
    assert "Traceback" not in res.output
    monkeypatch.setitem(sys.modules, "transformers", None)
    with pytest.raises(TextEncoderError, match=r"needs the transformers package: pip install 'videoqa-to"):
        load_text_encoder(data[2])


def test_help_documents_the_keys():
    res = CliRunner().invoke(build_cli(), ["siasamrea", "--help"])
    for key in ("model.text_encoder (glove|transformer", "model.text_encoder_path",
                "model.freeze_text_encoder", "model.text_max_len"):
        assert key in res.output, key


def test_subtitles_follow_each_row_and_reach_vqa_answer(data, tmp_path, monkeypatch):
    tok = load_text_encoder(data[2], max_len=16).tokenizer
    w = {t: i for i, t in enumerate(WORDS)}
    a, b = encode_questions(tok, ["what is it?", "what is it?"], [("red",), ("blue",)], 16,
                            subtitles=["it is red", ""], subtitle_max_len=2)
    pair = [w["[CLS]"], w["what"], w["is"], w["it"], w["?"], w["[SEP]"]]
    assert a["text_ids"].tolist() == [pair + [w["red"], w["[SEP]"], w["it"], w["is"], w["[SEP]"]]]
    assert a["text_type_ids"].tolist() == [[0] * 6 + [1] * 5]  # the subtitle is the second segment too
    assert b["text_ids"].tolist() == [pair + [w["blue"], w["[SEP]"]]]  # no subtitle text: the pair alone

    root, features, bert = data
    subbed = tmp_path / "how2qa"
    shutil.copytree(root, subbed)
    colours = {f"vid{i:02d}": COLOURS[i % 4] for i in range(64)}
    (subbed / "how2_subtitles.jsonl").write_text("".join(
        json.dumps({"vid_name": v, "sub": [{"text": f"it is {c}", "start": 0.0, "end": 2.0}]}) + "\n"
        for v, c in colours.items()))
    run = tmp_path / "run"
    _run((subbed, features, bert), run, "--epochs", "1")
    import train.tools.answer as answer

    reader = FeatureReader(features)

    class Frames:  # the recorded feature set stands in for the extraction (synthetic features here)
        outputs = reader.outputs

        def object_names(self, features):
            return None

    monkeypatch.setattr(answer.api, "rebuild_feature_set", lambda *a, **k: Frames())
    answerer = answer.Answerer.from_checkpoint(run / "checkpoints" / "best.pt")
    assert answerer.subtitles
    lines = (subbed / "how2qa_test.jsonl").read_text().splitlines()
    rows = {json.loads(x)["qid"]: json.loads(x) for x in lines}
    for p in [json.loads(x) for x in (run / "predictions_test.jsonl").read_text().splitlines()]:
        row = rows[p["qid"]]
        feats = answer.VideoFeatures(p["video_id"], dict(reader[p["video_id"]]))
        got = answerer.answer(feats, row["q"], candidates=[row[f"a{j}"] for j in range(4)],
                              subtitle=f"it is {colours[p['video_id']]}")
        assert got.prediction == p["prediction"]
