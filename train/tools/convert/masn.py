"""``vqa-convert masn``: a released MASN checkpoint -> this toolkit's checkpoint format.

Usage (the command lives in ``train/tools/convert/__init__.py``)::

    vqa-convert masn OFFICIAL_FILE --out FILE [--task-type open|mc|count] [--num-frames 20]
                [--vocab word_to_index_TASK.pkl] [--answers ans_to_index_TASK.pkl]

The official file is read by ``train.tools.convert.official_weights.read_tensors`` (a restricted
unpickler: released files are whole pickled modules, and no class of theirs is ever constructed). The
converted file is a
checkpoint as ``vqa-train`` writes it (``model`` state dict + ``meta``), loadable with
``weights_only=True``, so ``vqa-train MODEL --eval-only --checkpoint FILE`` evaluates the released
weights. A file whose names or shapes do not match the official network is refused with the names that
differ.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import torch

from extract.weights import sha256_file
from models.masn import MASNConfig, masn
from pipelines.atomic import atomic_path
from pipelines.version import toolkit_version
from train.config import config_to_dict
from train.tools.convert.official_weights import (
    read_answer_vocabulary,
    read_question_vocabulary,
    read_tensors,
)

__all__ = ["ConversionError", "convert_masn", "masn_state_from_official"]


class ConversionError(ValueError):
    """The official file does not match the official network (names or shapes); the message lists them."""


# --------------------------------------------------------------------------------------------------
# MASN (ahjeongseo/MASN-pytorch)
# --------------------------------------------------------------------------------------------------

# official names the official forward never reads (or derived copies): accepted and dropped
_MASN_UNUSED = re.compile(
    r"^(sentence_encoder\.compress_hn_layers(_bi)?\.weight|pos_location_encoding\.pe|pos_enc\.pe|"
    r"compress_(appr|motion)_(local|global)\.weight)$"
)
_STREAMS = {"appearance": "appr", "motion": "motion"}


def _weight_norm(tensors: dict, name: str) -> torch.Tensor:
    """Fold ``name_g`` / ``name_v`` of ``torch.nn.utils.weight_norm`` into g * v / ||v||."""
    g, v = tensors[name + "_g"], tensors[name + "_v"]
    if g.numel() == 1:  # dim=None: one norm over the whole tensor
        return g.reshape(()) * v / v.norm()
    dims = tuple(range(1, v.dim()))  # dim=0: one norm per output row
    return g * v / v.norm(dim=dims, keepdim=True)


def _masn_plan(cfg: MASNConfig) -> dict[str, tuple[str, str]]:
    """Our name -> (official name, how): ``"copy"`` or ``"wn"`` (weight-normalised pair)."""
    plan: dict[str, tuple[str, str]] = {
        "question_encoder.embedding.weight": ("glove.weight", "copy"),
        "question_encoder.embed_proj.weight": ("embedding_proj.1.weight", "copy"),
        "question_encoder.word_proj.weight": ("sentence_encoder.compress_output.weight", "copy"),
        "question_encoder.sentence_proj.weight": ("sentence_encoder.compress_hn_bi.weight", "copy"),
        "head.weight": ("fc.weight", "copy"), "head.bias": ("fc.bias", "copy"),
        "box_encoding.weight": ("bbox_location_encoding.weight", "copy"),
        "box_encoding.bias": ("bbox_location_encoding.bias", "copy"),
    }
    for kind in ("weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0"):
        for suffix in ("", "_reverse"):
            plan[f"question_encoder.lstm.{kind}{suffix}"] = (f"sentence_encoder.rnn.{kind}{suffix}", "copy")

    def linear(ours: str, official: str, how: str = "copy", bias: bool = True) -> None:
        plan[f"{ours}.weight"] = (f"{official}.weight", how)
        if bias:
            plan[f"{ours}.bias"] = (f"{official}.bias", "copy")

    for s, o in _STREAMS.items():
        plan[f"nodes.{s}.compress_local.weight"] = (f"compress_{o}_local.weight_raw", "copy")
        plan[f"nodes.{s}.compress_global.weight"] = (f"compress_{o}_global.weight_raw", "copy")
        linear(f"nodes.{s}.local_proj", f"{o}_local_proj")
        linear(f"nodes.{s}.node_proj", f"{o}_v")
        linear(f"graphs.{s}.edge1", f"{o}_adj.edge_layer_1", "wn", bias=False)
        linear(f"graphs.{s}.edge2", f"{o}_adj.edge_layer_2", "wn", bias=False)
        for i in range(3):
            linear(f"graphs.{s}.layers.{i}", f"{o}_gcn.layers.{i}.weight", bias=False)
        ban = f"{o}_vq_interact"
        linear(f"ban.{s}.att_v.linear", f"{ban}.v_att.logits.v_net.main.1", "wn")
        linear(f"ban.{s}.att_q.linear", f"{ban}.v_att.logits.q_net.main.1", "wn")
        plan[f"ban.{s}.att_h"] = (f"{ban}.v_att.logits.h_mat", "wn")
        plan[f"ban.{s}.att_bias"] = (f"{ban}.v_att.logits.h_bias", "copy")
        for g in range(cfg.glimpses):
            linear(f"ban.{s}.joint_v.{g}.linear", f"{ban}.b_net.{g}.v_net.main.1", "wn")
            linear(f"ban.{s}.joint_q.{g}.linear", f"{ban}.b_net.{g}.q_net.main.1", "wn")
            linear(f"ban.{s}.word_proj.{g}.linear", f"{ban}.q_prj.{g}.main.1", "wn")
    fusion = "motion_appr_fusion"
    for s, o in {**_STREAMS, "all": "all"}.items():
        linear(f"fusion.att.{s}.key", f"{fusion}.{o}_att_score.linear_k")
        linear(f"fusion.att.{s}.query", f"{fusion}.{o}_att_score.linear_q")
        linear(f"fusion.value.{s}", f"{fusion}.{o}_linear.0")
        plan[f"fusion.norm.{s}.weight"] = (f"{fusion}.{o}_norm.a_2", "copy")
        plan[f"fusion.norm.{s}.bias"] = (f"{fusion}.{o}_norm.b_2", "copy")
    linear("fusion.guide.key", f"{fusion}.ques_guide_att.linear_k")
    linear("fusion.guide.query", f"{fusion}.ques_guide_att.linear_q")
    linear("fusion.ffn.0", f"{fusion}.ffn.mlp.fc.linear")
    linear("fusion.ffn.3", f"{fusion}.ffn.mlp.linear")
    plan["fusion.out_norm.weight"] = (f"{fusion}.norm.a_2", "copy")
    plan["fusion.out_norm.bias"] = (f"{fusion}.norm.b_2", "copy")
    linear("pool.score.0", "attflat.mlp.fc.linear")
    linear("pool.score.3", "attflat.mlp.linear")
    linear("pool.merge", "attflat.linear_merge")
    return plan


def _official_names(plan: dict[str, tuple[str, str]]) -> set[str]:
    names = set()
    for name, how in plan.values():
        names |= {name + "_g", name + "_v"} if how == "wn" else {name}
    return names


def _infer_masn_config(t: dict[str, torch.Tensor], num_frames: int) -> MASNConfig:
    """Sizes of the official network from its tensors (names checked afterwards)."""
    need = ["fc.weight", "glove.weight", "compress_appr_local.weight_raw", "compress_motion_local.weight_raw",
            "bbox_location_encoding.weight", "appr_vq_interact.v_att.logits.v_net.main.1.weight_v"]
    missing = [n for n in need if n not in t]
    if missing:
        raise ConversionError(f"not an official MASN checkpoint: missing {', '.join(missing)}")
    hidden = t["fc.weight"].shape[1]
    glimpses = len({k.split(".")[2] for k in t if k.startswith("appr_vq_interact.b_net.")})
    rank = t["appr_vq_interact.v_att.logits.v_net.main.1.weight_v"].shape[0] // hidden
    try:
        return MASNConfig(
            num_frames=num_frames, appearance_dim=t["compress_appr_local.weight_raw"].shape[1],
            motion_dim=t["compress_motion_local.weight_raw"].shape[1], hidden_dim=hidden,
            word_dim=t["glove.weight"].shape[1], position_dim=t["bbox_location_encoding.weight"].shape[0],
            glimpses=max(glimpses, 1), ban_rank=max(rank, 1), official=True,
        )
    except ValueError as exc:
        raise ConversionError(f"not an official MASN checkpoint: {exc}") from None


def masn_state_from_official(
    tensors: dict[str, torch.Tensor], *, task_type: str | None = None, num_frames: int = 20
) -> tuple[MASNConfig, str, dict[str, torch.Tensor], int, int]:
    """Map an official MASN state (names as in ``model.state_dict()``) onto ``MASN(official=True)``.

    Args:
        tensors: official name -> tensor (``read_tensors``).
        task_type: ``"open"``, ``"mc"`` or ``"count"``; None = ``"open"`` when the answer layer has more
            than one output, else an error (a one-output layer is Count or a multiple-choice scorer).
        num_frames: T of the features the checkpoint was trained on (20 for TGIF-QA).

    Returns:
        (config, task_type, our state dict, vocabulary size, number of answers).

    Raises:
        ConversionError: missing, unexpected or mis-shaped tensors, each named.
    """
    cfg = _infer_masn_config(tensors, num_frames)
    outputs = tensors["fc.weight"].shape[0]
    if task_type is None:
        if outputs == 1:
            raise ConversionError("the answer layer has one output (Count or Action/Transition): pass "
                                  "--task-type count or --task-type mc")
        task_type = "open"
    if (task_type == "open") == (outputs == 1):
        raise ConversionError(
            f"--task-type {task_type} does not fit an answer layer with {outputs} output(s)")
    plan = _masn_plan(cfg)
    expected = _official_names(plan)
    missing = sorted(expected - set(tensors))
    unexpected = sorted(k for k in set(tensors) - expected if not _MASN_UNUSED.match(k))
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"missing {len(missing)}: {', '.join(missing[:8])}"
                         f"{' ...' if len(missing) > 8 else ''}")
        if unexpected:
            parts.append(f"unexpected {len(unexpected)}: {', '.join(unexpected[:8])}"
                         f"{' ...' if len(unexpected) > 8 else ''}")
        raise ConversionError(
            "the file's tensors do not match the official MASN network: " + "; ".join(parts))
    vocab, answers = tensors["glove.weight"].shape[0], outputs if task_type == "open" else 0
    model = masn(cfg, vocab_size=vocab, num_answers=answers, task_type=task_type)
    target = model.state_dict()
    state, wrong = {}, []
    for ours, (official, how) in plan.items():
        value = _weight_norm(tensors, official) if how == "wn" else tensors[official]
        if ours.endswith((".att_h", ".att_bias")) and value.dim() == 4 and value.shape[0] == 1:
            value = value.reshape(value.shape[1], -1).squeeze(-1)  # (1, g, 1, n) -> (g, n) / (g,)
        if tuple(value.shape) != tuple(target[ours].shape):
            wrong.append(f"{official} has shape {tuple(value.shape)}, expected {tuple(target[ours].shape)}")
        state[ours] = value.detach().to(target[ours].dtype).contiguous().clone()
    if wrong:
        raise ConversionError("the file's tensor shapes do not match the official MASN network: "
                              + "; ".join(wrong[:8]) + (" ..." if len(wrong) > 8 else ""))
    extra = sorted(set(target) - set(state))
    if extra:  # every tensor of ours must come from the file
        raise ConversionError(f"internal: no official source for {', '.join(extra)}")
    return cfg, task_type, state, vocab, answers


def convert_masn(src: Path, out: Path, *, task_type: str | None = None, num_frames: int = 20,
                 vocab: Path | None = None, answers: Path | None = None) -> dict:
    """Convert an official MASN file and write a toolkit checkpoint atomically; returns its ``meta``.

    Args:
        src: the official checkpoint (whole pickled module or state dict).
        out: the checkpoint to write.
        task_type, num_frames: see :func:`masn_state_from_official`.
        vocab: the official question vocabulary (``word_to_index_<Task>.pkl``, or any file
            :func:`train.tools.convert.official_weights.read_vocabulary` reads); stored as
            ``meta["question_vocab"]`` with ``meta["text_rule"] = "masn"`` (``pipelines.official_text``).
            Without it,
            ``vqa-train --eval-only`` refuses the checkpoint.
        answers: open-ended: the official answer list (``ans_to_index_<Task>.pkl``).

    Raises:
        OfficialFileError: an unreadable file, or a vocabulary whose size is not the checkpoint's.
        ConversionError: tensors that do not match the official network.
    """
    tensors = read_tensors(src)
    cfg, task_type, state, vocab_size, num_answers = masn_state_from_official(
        tensors, task_type=task_type, num_frames=num_frames)
    if answers is not None and task_type != "open":
        raise ConversionError(f"--answers applies to open-ended checkpoints; this one is {task_type}")
    question_vocab = read_question_vocabulary(vocab, vocab_size) if vocab is not None else None
    answer_vocab = read_answer_vocabulary(answers, num_answers) if answers is not None else None
    meta = {
        "model_name": "masn",
        "task_type": task_type,
        "model_config": json.dumps(config_to_dict(cfg), sort_keys=True),
        "answer_vocab": answer_vocab,
        "question_vocab_size": vocab_size,
        "toolkit_version": toolkit_version(),
        "converted_from": {"file": str(src), "sha256": sha256_file(src), "format": "ahjeongseo/MASN-pytorch"},
    }
    if question_vocab is not None:  # evaluation encodes text as the official preprocessing did
        meta["question_vocab"] = question_vocab
        meta["text_rule"] = "masn"
    with atomic_path(out) as tmp:
        torch.save({"model": state, "meta": meta}, tmp)
    return meta
