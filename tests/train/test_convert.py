"""``vqa-convert mspan``: official-format checkpoints (built here with the official key names and shapes)."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from models.mspan import MSPANConfig, mspan
from train.checkpoint import load_checkpoint
from train.tools.convert import build_cli
from train.tools.convert.mspan import ConvertError, convert_official_mspan

D, H, W, V, A, N, K, T, ITERS = 12, 8, 6, 20, 9, 6, 3, 2, 2  # sizes; K scales, T GCN layers, ITERS = --K


def official_state(task: str, *, D: int = D, V: int = V, A: int = A) -> dict[str, torch.Tensor]:  # noqa: N803
    """Random tensors under the official VideoQANetwork's key names and shapes (written out by hand)."""
    shapes: dict[str, tuple[int, ...]] = {"linguistic.encoder_embed.weight": (V, W)}
    for layer in range(3):  # its BiLSTM has 3 layers of H/2 units per direction
        for sfx in ("", "_reverse"):
            inp = W if layer == 0 else H
            shapes.update({f"linguistic.encoder.weight_ih_l{layer}{sfx}": (2 * H, inp),
                           f"linguistic.encoder.weight_hh_l{layer}{sfx}": (2 * H, H // 2),
                           f"linguistic.encoder.bias_ih_l{layer}{sfx}": (2 * H,),
                           f"linguistic.encoder.bias_hh_l{layer}{sfx}": (2 * H,)})
    shapes.update({"fc_cat.weight": (D, 2 * D), "fc_cat.bias": (D,)})
    for t in range(ITERS):
        for layer in range(T):
            shapes[f"ssp_offer.GCN_Module.{t}.gcn.{layer}.weight.weight"] = (D, D)
            shapes[f"ssp_offer.GCN_Module.{t}.gcn.{layer}.bias"] = (D,)
        for gat in ("GAT_up", "GAT_down"):
            p = f"ssp_offer.{gat}.{t}."
            shapes.update({p + "fusion_1.fc_visual.weight": (H, D), p + "fusion_1.fc_question.weight": (H, H),
                           p + "W3.weight": (H, D), p + "fusion_2.fc_visual.weight": (H, D),
                           p + "fusion_2.fc_question.weight": (H, H), p + "W6.weight": (D, D + H),
                           p + "W6.bias": (D,)})
    att = "ssp_offer.attention."
    shapes.update({att + "fc_visual.weight": (H, D), att + "fc_question.weight": (H, H),
                   att + "fc_Joint.weight": (1, H), att + "fc_Joint.bias": (1,),
                   "que_visual.fc_visual.weight": (H, D), "que_visual.fc_question.weight": (H, H),
                   "que_visual.bias": (H,)})
    if task in ("action", "transition"):
        shapes.update({"ans_visual.fc_visual.weight": (H, D), "ans_visual.fc_question.weight": (H, H),
                       "ans_visual.bias": (H,), "fc_que.weight": (H, H), "fc_ans.weight": (H, H),
                       "classifier.0.weight": (H, 4 * H), "classifier.0.bias": (H,),
                       "classifier.3.weight": (1, H), "classifier.3.bias": (1,)})
    else:
        out = A if task == "frameqa" else 1
        shapes.update({"classifier.0.weight": (H, H), "classifier.0.bias": (H,), "classifier.2.weight": (H,),
                       "classifier.2.bias": (H,), "classifier.2.running_mean": (H,),
                       "classifier.2.running_var": (H,), "classifier.4.weight": (out, H),
                       "classifier.4.bias": (out,)})
    g = torch.Generator().manual_seed(0)
    state = {k: torch.randn(s, generator=g) for k, s in shapes.items()}
    if "classifier.2.running_var" in state:
        state["classifier.2.running_var"] = state["classifier.2.running_var"].abs() + 0.5
        state["classifier.2.num_batches_tracked"] = torch.tensor(100)
    return state


def official_args(task: str, **sizes) -> argparse.Namespace:
    args = dict(dataset="tgif-qa", question_type=task, num_scale=K, T=T, K=ITERS, num_frames=N, word_dim=W,
                module_dim=H, app_pool5_dim=D, motion_dim=D, dropout=0.3, lr=1e-4,
                features_type=["appearance_pool5_16", "motion_16"], train=True)
    return argparse.Namespace(**{**args, **sizes})


def save_official(path: Path, task: str, state=None, args=None, **extra) -> Path:
    obj = {"args": official_args(task) if args is None else args, "score_all": 0.5, "score_word": None,
           "model": official_state(task) if state is None else state, **extra}
    torch.save(obj, path)
    return path


@pytest.mark.parametrize("task, task_type", [("frameqa", "open"), ("count", "count"), ("action", "mc")])
def test_converts_keys_and_shapes_into_the_official_setting(tmp_path, task, task_type):
    state = official_state(task)
    src = save_official(tmp_path / "model_0.pth", task, state)
    meta = convert_official_mspan(src, tmp_path / "ours.pt")
    ck = load_checkpoint(tmp_path / "ours.pt")
    assert ck["meta"] == meta and meta["model_name"] == "mspan" and meta["task_type"] == task_type
    cfg = MSPANConfig(**json.loads(meta["model_config"]))
    assert (cfg.variant, cfg.share_iteration_weights, cfg.num_scales, cfg.iterations, cfg.gcn_layers) == (
        "official", False, K, ITERS, T)
    assert (cfg.node_dim, cfg.hidden_dim, cfg.word_dim, cfg.num_frames, cfg.lstm_layers) == (D, H, W, N, 3)
    model = mspan(cfg, vocab_size=V, num_answers=A if task_type == "open" else 0, task_type=task_type)
    model.load_state_dict(ck["model"])  # strict: every key, every shape
    sd = ck["model"]
    assert torch.equal(sd["blocks.1.top_down.w1.weight"], state["ssp_offer.GAT_down.1.W3.weight"])
    up = "ssp_offer.GAT_up."
    assert torch.equal(sd["blocks.0.bottom_up.w2.weight"], state[up + "0.fusion_1.fc_visual.weight"])
    assert torch.equal(sd["blocks.1.bottom_up.w5.weight"], state[up + "1.fusion_2.fc_question.weight"])
    w6 = state["ssp_offer.GAT_down.0.W6.weight"]
    assert torch.equal(sd["blocks.0.top_down.w6_node.weight"], w6[:, :D])
    assert torch.equal(sd["blocks.0.top_down.w6_msg.weight"], w6[:, D:])
    assert torch.equal(sd["blocks.1.gcn.layers.1.weight"],
                       state["ssp_offer.GCN_Module.1.gcn.1.weight.weight"])
    assert torch.equal(sd["readout.w9.bias"], state["ssp_offer.attention.fc_Joint.bias"])
    assert torch.equal(sd["question_encoder.lstm.weight_hh_l2_reverse"],
                       state["linguistic.encoder.weight_hh_l2_reverse"])
    assert (meta["dataset"], meta["task"]) == ("tgif", task) and "question_vocab" not in meta
    src_info = json.loads(meta["converted_from"])
    assert src_info["file"] == "model_0.pth" and src_info["official_args"]["question_type"] == task
    model.eval()
    batch = {"appearance": torch.randn(2, N, D), "motion": torch.randn(2, N, D),
             "question": torch.tensor([[3, 4, 5], [6, 0, 0]]), "question_len": torch.tensor([3, 1]),
             "candidates": torch.randint(1, V, (2, 5, 2)), "candidates_len": torch.full((2, 5), 2)}
    with torch.no_grad():
        out = model(batch)
    assert all(torch.isfinite(v).all() for v in out.values())


def test_vocabularies_are_stored_in_order(tmp_path):
    src = save_official(tmp_path / "m.pth", "frameqa")
    words = {"<NULL>": 0, "<UNK>": 1, **{f"w{i}": i for i in range(2, V)}}
    answers = {"<UNK>": 0, **{f"a{i}": i for i in range(1, A)}}
    vocab = tmp_path / "vocab.json"
    vocab.write_text(json.dumps(dict(reversed(list(words.items())))))  # order in the file does not matter
    ans = tmp_path / "answers.json"
    ans.write_text(json.dumps(answers))
    meta = convert_official_mspan(src, tmp_path / "o.pt", vocab=vocab, answers=ans)
    assert meta["question_vocab"] == ["<pad>", "<unk>"] + [f"w{i}" for i in range(2, V)]
    assert meta["answer_vocab"] == ["<UNK>"] + [f"a{i}" for i in range(1, A)]
    assert meta["text_rule"] == "mspan-tgif"  # how vqa-train --eval-only encodes the questions
    with pytest.raises(ConvertError, match=r"answers\.json: 9 entries, but the checkpoint's question "
                                           r"embedding has 20 rows"):
        convert_official_mspan(src, tmp_path / "o1.pt", vocab=ans)
    with pytest.raises(ConvertError, match=r"vocab\.json: 20 entries, but the checkpoint's answer classifier "
                                           r"has 9 rows"):
        convert_official_mspan(src, tmp_path / "o1.pt", vocab=vocab, answers=vocab)
    swapped = tmp_path / "swapped.json"
    swapped.write_text(json.dumps({"<UNK>": 0, "<NULL>": 1, **{f"w{i}": i for i in range(2, V)}}))
    with pytest.raises(ConvertError, match=r"swapped\.json: index 0 and 1 are \['<UNK>', '<NULL>'\]"):
        convert_official_mspan(src, tmp_path / "o1.pt", vocab=swapped)
    short = tmp_path / "short.json"
    short.write_text(json.dumps({"<NULL>": 0, "<UNK>": 1}))
    with pytest.raises(ConvertError, match=r"short\.json: 2 entries.*20 rows"):
        convert_official_mspan(src, tmp_path / "o2.pt", vocab=short)
    gap = tmp_path / "gap.json"
    gap.write_text(json.dumps({"a": 0, "b": 2}))
    with pytest.raises(ConvertError, match="gap.json: its indices are not 0..1"):
        convert_official_mspan(src, tmp_path / "o3.pt", answers=gap)
    assert not any((tmp_path / f"o{i}.pt").exists() for i in (1, 2, 3))


def test_mismatched_keys_and_shapes_are_refused_naming_them(tmp_path):
    state = official_state("frameqa")
    del state["ssp_offer.GAT_up.1.W6.bias"]
    state["ssp_offer.GAT_down.0.W3.weight"] = torch.zeros(H, D + 1)
    state["ssp_offer.extra.weight"] = torch.zeros(2)
    src = save_official(tmp_path / "bad.pth", "frameqa", state)
    with pytest.raises(ConvertError) as exc:
        convert_official_mspan(src, tmp_path / "o.pt")
    msg = str(exc.value)
    assert "bad.pth" in msg and "missing keys: ssp_offer.GAT_up.1.W6.bias" in msg
    assert "unexpected keys: ssp_offer.extra.weight" in msg
    assert f"ssp_offer.GAT_down.0.W3.weight: shape ({H}, {D + 1}), expected ({H}, {D})" in msg
    assert not (tmp_path / "o.pt").exists()
    # a checkpoint of 3 iterations whose args say 2: the third iteration's keys are unexpected
    state = official_state("frameqa")
    state["ssp_offer.GCN_Module.2.gcn.0.bias"] = torch.zeros(D)
    with pytest.raises(ConvertError, match=r"unexpected keys: ssp_offer\.GCN_Module\.2"):
        convert_official_mspan(save_official(tmp_path / "b2.pth", "frameqa", state), tmp_path / "o.pt")


class Payload:  # not on the allow-list
    def __reduce__(self):
        return (print, ("unpickled!",))


def test_only_the_allow_listed_types_are_unpickled(tmp_path, capsys):
    src = save_official(tmp_path / "evil.pth", "frameqa", extra=Payload())
    # (builtins.print pickles as ray.experimental.tqdm_ray.safe_print once Ray was imported in this process)
    with pytest.raises(ConvertError, match=r"evil.pth: holds a \S*print object.*refused"):
        convert_official_mspan(src, tmp_path / "o.pt")
    assert "unpickled!" not in capsys.readouterr().out
    # what the MSVD-QA / MSRVTT-QA files hold: numpy.float64 per-question-word scores
    ok = save_official(tmp_path / "msvd.pth", "frameqa", score_word={"what": np.float64(0.3)})
    assert convert_official_mspan(ok, tmp_path / "o.pt")["task_type"] == "open"
    torch.save({"model": {}}, tmp_path / "nokeys.pth")
    with pytest.raises(ConvertError, match=r"holds a dict with the keys model; expected .*\{'args'"):
        convert_official_mspan(tmp_path / "nokeys.pth", tmp_path / "o.pt")
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(ConvertError, match="junk.pth is a text file .*, not a checkpoint"):
        convert_official_mspan(tmp_path / "junk.pth", tmp_path / "o.pt")


def test_cli_converts_and_reports_errors_in_one_line(tmp_path):
    src = save_official(tmp_path / "m.pth", "count")
    res = CliRunner().invoke(build_cli(), ["mspan", str(src), "--out", str(tmp_path / "o.pt")])
    assert res.exit_code == 0, res.output
    assert "variant official, count" in res.output and (tmp_path / "o.pt").is_file()
    state = official_state("count")
    del state["fc_cat.bias"]
    bad = save_official(tmp_path / "bad.pth", "count", state)
    res = CliRunner().invoke(build_cli(), ["mspan", str(bad), "--out", str(tmp_path / "o2.pt")])
    assert res.exit_code == 1 and "Traceback" not in res.output
    assert "Error:" in res.output and "missing keys: fc_cat.bias" in res.output
    root = Path(__file__).resolve().parents[2]
    done = subprocess.run([sys.executable, "-m", "train.tools.convert", "mspan", "--help"], cwd=root,
                          capture_output=True, text=True, env={"PYTHONPATH": str(root), "PATH": ""})
    assert done.returncode == 0 and "--vocab" in done.stdout


def _damaged(tmp_path: Path, kind: str) -> Path:
    """A file passed by mistake: an interrupted download, an empty or a text file, a bare state dict."""
    full = save_official(tmp_path / "full.pth", "frameqa").read_bytes()
    path = tmp_path / f"{kind}.pth"
    if kind == "truncated_zip":
        path.write_bytes(full[: len(full) // 2])
    elif kind == "truncated_legacy":
        torch.save({"args": official_args("frameqa"), "model": official_state("frameqa")}, path,
                   _use_new_zipfile_serialization=False)
        path.write_bytes(path.read_bytes()[:3000])
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "text":
        path.write_text("<html>404 Not Found</html>\n")
    else:  # the state dict alone, without the training script's args
        torch.save(official_state("frameqa"), path)
    return path


@pytest.mark.parametrize("model", ["mspan", "masn"])
@pytest.mark.parametrize("kind,what", [
    ("truncated_zip", "zip archive (the format of torch.save) whose end is missing"),
    ("truncated_legacy", "truncated"),
    ("empty", "is an empty file"),
    ("text", "is a text file (it starts '<html>404 Not Found</html>')"),
    ("state_dict", None),
])
def test_a_damaged_or_wrong_file_is_one_line_saying_what_it_is(tmp_path, capsys, model, kind, what):
    from train.tools.convert import main

    src = _damaged(tmp_path, kind)
    with pytest.raises(SystemExit) as exit_info:
        main([model, str(src), "--out", str(tmp_path / "o.pt")])
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert exit_info.value.code == 1 and len(lines) == 1, err
    line = lines[0]
    assert str(src) in line and "Traceback" not in err and len(line) < 400, line
    assert "persistent id" not in line and "\\x" not in line and "Errno" not in line, line
    if kind == "state_dict":
        what = "bare state dict (79 tensors" if model == "mspan" else "not an official MASN checkpoint"
    assert what in line, line
    assert ("expected" in line) or kind == "state_dict", line
    assert not (tmp_path / "o.pt").exists()
