"""``vqa-convert masn``: official-format files (state dicts and whole pickled modules) -> our checkpoints.

The official files are synthesised here with the official network's parameter names and shapes (written
out independently of the converter's own table), at tiny sizes.
"""

from __future__ import annotations

import json
import pickle
import re

import pytest
import torch
from click.testing import CliRunner
from torch import nn

from models.masn import MASNConfig, masn
from train.checkpoint import load_checkpoint
from train.tools.convert import build_cli
from train.tools.convert.masn import ConversionError, masn_state_from_official
from train.tools.convert.official_weights import OfficialFileError, read_tensors

# hidden, appearance, motion, word, vocabulary, glimpses, position width, BAN rank
D, DA, DM, W, V, G, P, K = 8, 12, 10, 6, 15, 2, 4, 3


def official_state(outputs: int = 5, seed: int = 0) -> dict[str, torch.Tensor]:
    """Names and shapes of ahjeongseo/MASN-pytorch's MASN.state_dict() (1 LSTM layer, 2 GCN layers)."""
    g = torch.Generator().manual_seed(seed)
    shapes: dict[str, tuple] = {
        "compress_appr_local.weight_raw": (D, DA), "compress_motion_local.weight_raw": (D, DM),
        "compress_appr_global.weight_raw": (D, DA), "compress_motion_global.weight_raw": (D, DM),
        "glove.weight": (V, W), "embedding_proj.1.weight": (D, W),
        "sentence_encoder.compress_hn_layers.weight": (D, D),
        "sentence_encoder.compress_hn_layers_bi.weight": (D, 2 * D),
        "sentence_encoder.compress_hn_bi.weight": (D, 2 * D),
        "sentence_encoder.compress_output.weight": (D, 2 * D),
        "bbox_location_encoding.weight": (P, 6), "bbox_location_encoding.bias": (P,),
        "pos_location_encoding.pe": (20, P), "pos_enc.pe": (20, D),
        "fc.weight": (outputs, D), "fc.bias": (outputs,),
        "attflat.mlp.fc.linear.weight": (D, D), "attflat.mlp.fc.linear.bias": (D,),
        "attflat.mlp.linear.weight": (1, D), "attflat.mlp.linear.bias": (1,),
        "attflat.linear_merge.weight": (D, D), "attflat.linear_merge.bias": (D,),
    }
    for suffix in ("", "_reverse"):
        shapes |= {f"sentence_encoder.rnn.weight_ih_l0{suffix}": (4 * D, D),
                   f"sentence_encoder.rnn.weight_hh_l0{suffix}": (4 * D, D),
                   f"sentence_encoder.rnn.bias_ih_l0{suffix}": (4 * D,),
                   f"sentence_encoder.rnn.bias_hh_l0{suffix}": (4 * D,)}
    for s in ("appr", "motion"):
        shapes |= {f"{s}_local_proj.weight": (D, D + 2 * P), f"{s}_local_proj.bias": (D,),
                   f"{s}_v.weight": (D, 2 * D), f"{s}_v.bias": (D,)}
        for e in (1, 2):  # weight_norm(dim=0)
            shapes |= {f"{s}_adj.edge_layer_{e}.weight_g": (D, 1), f"{s}_adj.edge_layer_{e}.weight_v": (D, D)}
        shapes |= {f"{s}_gcn.layers.{i}.weight.weight": (D, D) for i in range(3)}
        ban = f"{s}_vq_interact"
        for net in ("v_net", "q_net"):  # weight_norm(dim=None): a scalar gain
            shapes |= {f"{ban}.v_att.logits.{net}.main.1.weight_g": (),
                       f"{ban}.v_att.logits.{net}.main.1.weight_v": (K * D, D),
                       f"{ban}.v_att.logits.{net}.main.1.bias": (K * D,)}
        shapes |= {f"{ban}.v_att.logits.h_mat_g": (), f"{ban}.v_att.logits.h_mat_v": (1, G, 1, K * D),
                   f"{ban}.v_att.logits.h_bias": (1, G, 1, 1)}
        for i in range(G):
            for net in ("b_net.{i}.v_net", "b_net.{i}.q_net", "q_prj.{i}"):
                n = f"{ban}.{net.format(i=i)}.main.1"
                shapes |= {f"{n}.weight_g": (), f"{n}.weight_v": (D, D), f"{n}.bias": (D,)}
    f = "motion_appr_fusion"
    for s in ("appr", "motion", "all"):
        for lin in (f"{s}_att_score.linear_k", f"{s}_att_score.linear_q", f"{s}_linear.0"):
            shapes |= {f"{f}.{lin}.weight": (D, D), f"{f}.{lin}.bias": (D,)}
        shapes |= {f"{f}.{s}_norm.a_2": (D,), f"{f}.{s}_norm.b_2": (D,)}
    for lin in ("ques_guide_att.linear_k", "ques_guide_att.linear_q", "ffn.mlp.fc.linear", "ffn.mlp.linear"):
        shapes |= {f"{f}.{lin}.weight": (D, D), f"{f}.{lin}.bias": (D,)}
    shapes |= {f"{f}.norm.a_2": (D,), f"{f}.norm.b_2": (D,)}
    return {k: torch.randn(s, generator=g) for k, s in shapes.items()}


class StandIn(nn.Module):
    """A stand-in for the official class: a module tree with the official names. Never to be rebuilt."""

    rebuilt = []

    def __setstate__(self, state):  # runs only if an unpickler constructs this class
        StandIn.rebuilt.append(type(self).__name__)
        super().__setstate__(state)


def stand_in_module(tensors: dict[str, torch.Tensor]) -> nn.Module:
    root = StandIn()
    for name, value in tensors.items():
        *path, leaf = name.split(".")
        node = root
        for part in path:
            if part not in node._modules:
                node.add_module(part, StandIn())
            node = node._modules[part]
        if leaf == "pe":
            node.register_buffer(leaf, value)
        else:
            node.register_parameter(leaf, nn.Parameter(value))
    return root


def _run(args):
    return CliRunner().invoke(build_cli(), args)


@pytest.mark.parametrize("form", ["state_dict", "module", "module_legacy", "data_parallel"])
def test_reads_every_official_file_form_without_rebuilding_its_classes(tmp_path, form):
    tensors = official_state()
    path = tmp_path / "official.pth"
    if form == "state_dict":
        torch.save(tensors, path)
    else:
        module = stand_in_module(tensors)
        if form == "data_parallel":
            wrapper = StandIn()
            wrapper.add_module("module", module)
            module = wrapper
        torch.save(module, path, _use_new_zipfile_serialization=form != "module_legacy")
    StandIn.rebuilt.clear()
    got = read_tensors(path)
    assert StandIn.rebuilt == []  # the restricted unpickler never constructed the pickled class
    assert set(got) == set(tensors)
    for k, v in tensors.items():
        assert torch.equal(got[k], v), k


def test_converted_weights_are_the_official_ones(tmp_path):
    tensors = official_state(outputs=5)
    torch.save(tensors, tmp_path / "o.pth")
    res = _run(["masn", str(tmp_path / "o.pth"), "--out", str(tmp_path / "c.pt")])
    assert res.exit_code == 0, res.output
    ck = load_checkpoint(tmp_path / "c.pt")  # weights_only=True
    meta = ck["meta"]
    cfg = MASNConfig(**json.loads(meta["model_config"]))
    assert cfg.official and (cfg.hidden_dim, cfg.glimpses, cfg.ban_rank, cfg.position_dim) == (D, G, K, P)
    assert meta["model_name"] == "masn" and meta["task_type"] == "open"
    assert len(meta["converted_from"]["sha256"]) == 64
    model = masn(cfg, vocab_size=V, num_answers=5, task_type="open")
    model.load_state_dict(ck["model"])  # strict: every tensor of ours came from the file
    sd = ck["model"]
    assert torch.equal(sd["head.weight"], tensors["fc.weight"])
    assert torch.equal(sd["nodes.motion.compress_local.weight"], tensors["compress_motion_local.weight_raw"])
    gv = "appr_vq_interact.q_prj.1.main.1.weight"
    torch.testing.assert_close(sd["ban.appearance.word_proj.1.linear.weight"],
                               tensors[gv + "_g"] * tensors[gv + "_v"] / tensors[gv + "_v"].norm())
    g, v = tensors["motion_adj.edge_layer_2.weight_g"], tensors["motion_adj.edge_layer_2.weight_v"]
    torch.testing.assert_close(sd["graphs.motion.edge2.weight"], g * v / v.norm(dim=1, keepdim=True))
    h = tensors["appr_vq_interact.v_att.logits.h_mat_v"]
    torch.testing.assert_close(sd["ban.appearance.att_h"], (tensors["appr_vq_interact.v_att.logits.h_mat_g"]
                                                            * h / h.norm()).reshape(G, K * D))
    assert torch.equal(sd["fusion.out_norm.weight"], tensors["motion_appr_fusion.norm.a_2"])


def test_one_output_layers_need_the_task_type(tmp_path):
    torch.save(official_state(outputs=1), tmp_path / "o.pth")
    res = _run(["masn", str(tmp_path / "o.pth"), "--out", str(tmp_path / "c.pt")])
    assert res.exit_code == 1 and "--task-type count or --task-type mc" in res.output
    for task in ("count", "mc"):
        res = _run(["masn", str(tmp_path / "o.pth"), "--out", str(tmp_path / "c.pt"), "--task-type", task])
        assert res.exit_code == 0, res.output
        assert load_checkpoint(tmp_path / "c.pt")["meta"]["task_type"] == task


@pytest.mark.parametrize("change, message", [
    (lambda t: t.pop("motion_appr_fusion.all_linear.0.bias"),
     "missing 1: motion_appr_fusion.all_linear.0.bias"),
    (lambda t: t.__setitem__("appr_gcn.layers.3.weight.weight", torch.zeros(D, D)),
     "unexpected 1: appr_gcn.layers.3.weight.weight"),
    (lambda t: t.__setitem__("appr_v.weight", torch.zeros(D, D)),
     r"appr_v.weight has shape \(8, 8\), expected \(8, 16\)"),
    (lambda t: t.pop("fc.weight"), "missing fc.weight"),
])
def test_mismatched_files_are_refused_naming_the_difference(tmp_path, change, message):
    tensors = official_state()
    change(tensors)
    with pytest.raises(ConversionError, match=message):
        masn_state_from_official(tensors)
    torch.save(tensors, tmp_path / "o.pth")
    res = _run(["masn", str(tmp_path / "o.pth"), "--out", str(tmp_path / "c.pt")])
    assert res.exit_code == 1 and "Traceback" not in res.output
    assert str(tmp_path / "o.pth") in res.output
    assert not (tmp_path / "c.pt").exists()


class _Evil:
    def __reduce__(self):
        import os

        return (os.system, ("touch MARKER",))


def test_pickled_code_is_never_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "evil.pth"
    torch.save({"model": _Evil(), "fc.weight": torch.zeros(2, 2)}, path)
    with pytest.raises(OfficialFileError):
        read_tensors(path)
    raw = tmp_path / "raw.pkl"  # not a torch file at all
    raw.write_bytes(pickle.dumps(_Evil()))
    with pytest.raises(OfficialFileError, match="raw.pkl"):
        read_tensors(raw)
    assert not (tmp_path / "MARKER").exists()
    res = _run(["masn", str(tmp_path / "nope.pth"), "--out", str(tmp_path / "c.pt")])
    assert res.exit_code == 1 and "no such file" in res.output


def test_official_vocabularies_are_stored_and_checked(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    torch.save(official_state(outputs=3), tmp_path / "o.pth")
    words = ["#START#", "UNK", "\\?", *(f"w{i}" for i in range(3, V))]
    index = {w: i for i, w in enumerate(words)}
    (tmp_path / "word_to_index.pkl").write_bytes(pickle.dumps(index, protocol=3))
    (tmp_path / "index_to_ans.pkl").write_bytes(pickle.dumps({0: "red", 1: "dog", 2: "two"}, protocol=3))
    args = ["masn", str(tmp_path / "o.pth"), "--out", str(tmp_path / "c.pt"), "--vocab",
            str(tmp_path / "word_to_index.pkl")]
    res = _run([*args, "--answers", str(tmp_path / "index_to_ans.pkl")])
    assert res.exit_code == 0, res.output
    meta = load_checkpoint(tmp_path / "c.pt")["meta"]
    assert meta["question_vocab"] == ["<pad>", "<unk>", *words[2:]] and meta["text_rule"] == "masn"
    assert meta["answer_vocab"] == ["red", "dog", "two"]
    # a vocabulary of the wrong size is refused naming the file and both numbers
    (tmp_path / "short.pkl").write_bytes(pickle.dumps(words[:-1]))
    res = _run([*args[:-1], str(tmp_path / "short.pkl")])
    assert res.exit_code == 1 and "Traceback" not in res.output
    assert f"short.pkl: {V - 1} entries, but the checkpoint's question embedding has {V} rows" in res.output
    res = _run([*args, "--answers", str(tmp_path / "word_to_index.pkl")])
    assert f"word_to_index.pkl: {V} entries, but the checkpoint's answer classifier has 3 rows" in res.output
    # a pickle that names any class or function is refused unbuilt (dicts, lists, str, int only)
    (tmp_path / "evil.pkl").write_bytes(pickle.dumps({"a": _Evil()}))
    res = _run([*args[:-1], str(tmp_path / "evil.pkl")])
    assert res.exit_code == 1 and re.search(r"evil\.pkl: holds a \w+\.system object", res.output)
    assert not (tmp_path / "MARKER").exists()
    import numpy as np

    (tmp_path / "np.pkl").write_bytes(pickle.dumps({"a": np.int64(0)}))
    assert "np.pkl: holds a numpy" in _run([*args[:-1], str(tmp_path / "np.pkl")]).output
    assert not (tmp_path / "c2.pt").exists()


def test_module_entry_point():
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-m", "train.tools.convert", "masn", "--help"], capture_output=True,
                         text=True, check=True)
    assert "OFFICIAL_FILE" in out.stdout
