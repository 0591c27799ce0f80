"""Released checkpoints evaluated end to end: official-format weights + vocabulary files -> vqa-convert ->
``vqa-train --eval-only`` on the tiny TGIF-QA data, with the questions and answers indexed as the official
preprocessing indexes them.

The reference in each test maps the tiny dataset's questions to ids by hand from the official vocabulary
(independently of ``pipelines.official_text``), runs the converted network on the same features and
scores it as the official evaluation does (an answer outside the official list is wrong).
"""

from __future__ import annotations

import csv
import json
import pickle
import sys
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from extract.reader import FeatureReader
from models import get_model
from train.checkpoint import load_checkpoint
from train.cli import build_cli as train_cli
from train.config import build_config
from train.tools.answer import Answerer, AnswerError
from train.tools.convert import build_cli as convert_cli

sys.path.insert(0, str(Path(__file__).parent))
import test_convert as mspan_files  # noqa: E402  (synthetic official MSPAN files)
import test_convert_masn as masn_files  # noqa: E402  (synthetic official MASN files)
from conftest import DIM, MASN_FRAMES, N_FRAMES  # noqa: E402

# official vocabularies in an order of their own (ours is by frequency); "of" is left out (-> <UNK>)
MSPAN_WORDS = ["<NULL>", "<UNK>", "ball", "zebra", "color", "the", "is", "what"]
MASN_WORDS = ["#START#", "UNK", "\\?", "ball", "<EOS>", "color", "the", "is", "what", "zebra"]
ANSWERS = ["<UNK>", "green", "red", "blue", "purple"]  # "yellow" is missing: counted wrong


def _test_rows(data) -> list[dict[str, str]]:
    with open(data.root / "dataset" / "Test_frameqa_question.csv", encoding="utf-8") as fh:
        return list(csv.DictReader(fh, delimiter="\t"))


def _evaluate(data, features: Path, model: str, ckpt: Path, out: Path) -> dict:
    args = [model, "--dataset", "tgif", "--task", "frameqa", "--root", str(data.root), "--features",
            str(features), "--out", str(out), "--no-progress", "--eval-only", "--checkpoint", str(ckpt)]
    res = CliRunner().invoke(train_cli(), args, catch_exceptions=False)
    assert res.exit_code == 0, res.output
    return json.loads((out / "metrics.json").read_text())


def _predictions(out: Path) -> dict[str, str]:
    rows = [json.loads(line) for line in (out / "predictions_test.jsonl").read_text().splitlines()]
    return {r["qid"]: r["prediction"] for r in rows}


def _reference(ckpt: Path, features: Path, rows, words: list[str], tokens) -> tuple[dict[str, str], float]:
    """Predictions and accuracy of the converted network on hand-indexed questions, scored officially."""
    ck = load_checkpoint(ckpt)
    meta = ck["meta"]
    entry = get_model(meta["model_name"])
    net = entry.build(build_config(entry.config_cls, json.loads(meta["model_config"]), section="model"),
                      vocab_size=len(words), num_answers=len(ANSWERS), task_type="open")
    net.load_state_dict(ck["model"])
    net.eval()
    index = {w: i for i, w in enumerate(words)}
    ids = [[index.get(t, 1) for t in tokens(row["question"])] for row in rows]
    batch = _video_batch(features, rows)
    batch["question"] = torch.tensor([q + [0] * (max(map(len, ids)) - len(q)) for q in ids])
    batch["question_len"] = torch.tensor([len(q) for q in ids])
    with torch.no_grad():
        preds = [ANSWERS[i] for i in net(batch)["logits"].argmax(-1).tolist()]
    right = sum(p == row["answer"] and row["answer"] in ANSWERS for p, row in zip(preds, rows, strict=True))
    return {f"frameqa-{row['key']}": p for p, row in zip(preds, rows, strict=True)}, right / len(rows)


def _video_batch(features: Path, rows) -> dict[str, torch.Tensor]:
    reader = FeatureReader(features)
    items = [reader[row["gif_name"]] for row in rows]
    return {k: torch.stack([torch.as_tensor(it[k]) for it in items]) for k in items[0]}


def _mspan_official(tmp_path: Path, *, green_wins: bool) -> tuple[Path, Path, Path]:
    sizes = dict(D=DIM, V=len(MSPAN_WORDS), A=len(ANSWERS))
    state = mspan_files.official_state("frameqa", **sizes)
    if green_wins:  # the answer layer ignores its input and always says "green"
        state["classifier.4.weight"].zero_()
        state["classifier.4.bias"].copy_(torch.eye(len(ANSWERS))[ANSWERS.index("green")])
    else:  # larger answer weights, so the prediction depends on the question and the video
        state["classifier.4.weight"].mul_(20)
    args = mspan_files.official_args("frameqa", num_frames=N_FRAMES, app_pool5_dim=DIM, motion_dim=DIM,
                                     num_scale=2)
    src = mspan_files.save_official(tmp_path / "model.pth", "frameqa", state, args=args)
    vocab, answers = tmp_path / "tgif-qa_frameqa_vocab.json", tmp_path / "tgif-qa_frameqa_answers_list.json"
    vocab.write_text(json.dumps({w: i for i, w in enumerate(MSPAN_WORDS)}), encoding="utf-8")
    answers.write_text(json.dumps({a: i for i, a in enumerate(ANSWERS)}), encoding="utf-8")
    return src, vocab, answers


def test_released_mspan_evaluates_with_the_official_indices(tiny_tgif, tmp_path):
    src, vocab, answers = _mspan_official(tmp_path, green_wins=False)
    ckpt = tmp_path / "mspan.pt"
    res = CliRunner().invoke(convert_cli(), ["mspan", str(src), "--out", str(ckpt), "--vocab", str(vocab),
                                             "--answers", str(answers)])
    assert res.exit_code == 0, res.output
    m = _evaluate(tiny_tgif, tiny_tgif.features, "mspan", ckpt, tmp_path / "eval")
    rows = _test_rows(tiny_tgif)
    # the official MSPAN rule: lower case, last character (the "?") dropped, words
    want, acc = _reference(ckpt, tiny_tgif.features, rows, MSPAN_WORDS, lambda q: q.lower()[:-1].split())
    got = _predictions(tmp_path / "eval")
    assert got == want and len(set(want.values())) > 1
    assert m["test"]["accuracy"] == pytest.approx(acc) and m["text_rule"] == "mspan-tgif"
    # the same network fed the run's own vocabulary indices would answer otherwise: the test can fail
    ours = ["<pad>", "<unk>", *sorted({t for r in rows for t in r["question"].split()} - {"?"})]
    assert _reference(ckpt, tiny_tgif.features, rows, ours, lambda q: q.lower()[:-1].split())[0] != want


def test_a_known_answer_wins_and_missing_answers_count_wrong(tiny_tgif, tmp_path):
    src, vocab, answers = _mspan_official(tmp_path, green_wins=True)
    ckpt = tmp_path / "mspan.pt"
    res = CliRunner().invoke(convert_cli(), ["mspan", str(src), "--out", str(ckpt), "--vocab", str(vocab),
                                             "--answers", str(answers)])
    assert res.exit_code == 0, res.output
    m = _evaluate(tiny_tgif, tiny_tgif.features, "mspan", ckpt, tmp_path / "eval")
    rows = _test_rows(tiny_tgif)
    assert set(_predictions(tmp_path / "eval").values()) == {"green"}
    assert m["test"]["accuracy"] == pytest.approx(sum(r["answer"] == "green" for r in rows) / len(rows))
    assert m["test"]["accuracy"] > 0 and any(r["answer"] == "yellow" for r in rows)


def test_released_mspan_multiple_choice_reads_candidates_whole(tiny_tgif, tmp_path):
    """Candidates keep their last character (only questions lose it) and share the question vocabulary."""
    # "wave" is left out: that candidate is <UNK>
    words = ["<NULL>", "<UNK>", "sit", "spin", "do", "person", "jump", "what", "the", "does", "run"]
    state = mspan_files.official_state("action", D=DIM, V=len(words))
    state["classifier.3.weight"].mul_(20)
    args = mspan_files.official_args("action", num_frames=N_FRAMES, app_pool5_dim=DIM, motion_dim=DIM,
                                     num_scale=2)
    src = mspan_files.save_official(tmp_path / "model.pth", "action", state, args=args)
    vocab = tmp_path / "tgif-qa_action_vocab.json"
    vocab.write_text(json.dumps({w: i for i, w in enumerate(words)}), encoding="utf-8")
    ckpt = tmp_path / "mspan.pt"
    res = CliRunner().invoke(convert_cli(), ["mspan", str(src), "--out", str(ckpt), "--vocab", str(vocab)])
    assert res.exit_code == 0, res.output
    out = tmp_path / "eval"
    args = ["mspan", "--dataset", "tgif", "--task", "action", "--root", str(tiny_tgif.root), "--features",
            str(tiny_tgif.features), "--out", str(out), "--no-progress", "--eval-only", "--checkpoint",
            str(ckpt)]
    res = CliRunner().invoke(train_cli(), args, catch_exceptions=False)
    assert res.exit_code == 0, res.output
    ck = load_checkpoint(ckpt)
    entry = get_model("mspan")
    net = entry.build(build_config(entry.config_cls, json.loads(ck["meta"]["model_config"]), section="model"),
                      vocab_size=len(words), num_answers=0, task_type="mc")
    net.load_state_dict(ck["model"])
    net.eval()
    index = {w: i for i, w in enumerate(words)}
    with open(tiny_tgif.root / "dataset" / "Test_action_question.csv", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh, delimiter="\t"))
    batch = _video_batch(tiny_tgif.features, rows)  # every question here has the same 5 words
    batch["question"] = torch.tensor([[index.get(t, 1) for t in r["question"].lower()[:-1].split()]
                                      for r in rows])
    batch["question_len"] = torch.full((len(rows),), 5)
    batch["candidates"] = torch.tensor([[[index.get(r[f"a{k}"].lower(), 1)] for k in range(1, 6)]
                                        for r in rows])
    batch["candidates_len"] = torch.ones(len(rows), 5, dtype=torch.long)
    with torch.no_grad():
        preds = net(batch)["scores"].argmax(-1).tolist()
    want = {f"action-{r['key']}": p for p, r in zip(preds, rows, strict=True)}
    right = sum(p == int(r["answer"]) for p, r in zip(preds, rows, strict=True))
    m = json.loads((out / "metrics.json").read_text())
    assert {k: int(v) for k, v in _predictions(out).items()} == want and len(set(want.values())) > 1
    assert m["test"]["accuracy"] == pytest.approx(right / len(rows))


def test_converted_without_vocab_is_refused_naming_the_option(tiny_tgif, tmp_path):
    src, _, _ = _mspan_official(tmp_path, green_wins=True)
    ckpt = tmp_path / "mspan.pt"
    assert CliRunner().invoke(convert_cli(), ["mspan", str(src), "--out", str(ckpt)]).exit_code == 0
    args = ["mspan", "--dataset", "tgif", "--task", "frameqa", "--root", str(tiny_tgif.root), "--features",
            str(tiny_tgif.features), "--out", str(tmp_path / "eval"), "--no-progress", "--eval-only",
            "--checkpoint", str(ckpt)]
    res = CliRunner().invoke(train_cli(), args)
    assert res.exit_code != 0
    assert "without --vocab" in res.output and "--vocab FILE --answers FILE" in res.output
    assert "Traceback" not in res.output
    with pytest.raises(AnswerError, match="converted from an official mspan checkpoint.*--eval-only"):
        Answerer.from_checkpoint(ckpt)  # no record of the authors' feature extraction to rebuild


def _released_masn_checkpoint(tmp_path: Path) -> Path:
    """A MASN FrameQA checkpoint in the official layout with its pickled vocabularies, converted."""
    # random weights of a seed whose answers depend on the question (the callers check it)
    tensors = masn_files.official_state(outputs=len(ANSWERS), seed=11)
    hidden, g = tensors["fc.weight"].shape[1], torch.Generator().manual_seed(11)
    tensors["glove.weight"] = torch.randn(len(MASN_WORDS), tensors["glove.weight"].shape[1], generator=g)
    for s in ("appr", "motion"):
        for part in ("local", "global"):
            tensors[f"compress_{s}_{part}.weight_raw"] = torch.randn(hidden, DIM, generator=g)
    tensors["fc.weight"].mul_(20)
    tensors["fc.bias"].zero_()
    torch.save(tensors, tmp_path / "FrameQA.pth")
    vocab, answers = tmp_path / "word_to_index_FrameQA.pkl", tmp_path / "ans_to_index_FrameQA.pkl"
    vocab.write_bytes(pickle.dumps({w: i for i, w in enumerate(MASN_WORDS)}, protocol=3))
    answers.write_bytes(pickle.dumps({a: i for i, a in enumerate(ANSWERS)}, protocol=3))
    ckpt = tmp_path / "masn.pt"
    res = CliRunner().invoke(convert_cli(), ["masn", str(tmp_path / "FrameQA.pth"), "--out", str(ckpt),
                                             "--num-frames", str(MASN_FRAMES), "--vocab", str(vocab),
                                             "--answers", str(answers)])
    assert res.exit_code == 0, res.output
    return ckpt


def test_released_masn_evaluates_with_its_pickled_vocabularies(tiny_tgif, tiny_masn_features, tmp_path):
    ckpt = _released_masn_checkpoint(tmp_path)
    m = _evaluate(tiny_tgif, tiny_masn_features, "masn", ckpt, tmp_path / "eval")
    rows = _test_rows(tiny_tgif)
    # the official MASN rule: the "?" becomes the token "\?", words lower-cased, at most 20
    want, acc = _reference(ckpt, tiny_masn_features, rows, MASN_WORDS,
                           lambda q: q.lower().replace("?", " \\? ").split())
    assert _predictions(tmp_path / "eval") == want and len(set(want.values())) > 1
    assert m["test"]["accuracy"] == pytest.approx(acc) and m["text_rule"] == "masn"
