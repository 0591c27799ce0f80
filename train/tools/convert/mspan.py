"""Convert a checkpoint released with the official MSPAN code (gzcsudo/MSPAN-VideoQA) into ours.

The official ``train.py`` saves ``torch.save({"args": argparse.Namespace, "score_all": float,
"score_word": None | {question word: numpy.float64}, "model": state_dict})``. We read it with
``torch.load(weights_only=True)`` and an allow-list of exactly those types (:data:`OFFICIAL_SAFE_GLOBALS`),
build the MSPAN config of the ``variant="official"`` setting from ``args`` and the tensor shapes, rename
every official key to ours (:func:`official_key_map`), refuse any missing, unexpected or mis-shaped key,
and write a checkpoint that ``vqa-train mspan --eval-only`` reads (``model`` + ``meta``).

Official name -> ours (t: iteration, l: GCN layer)::

    linguistic.encoder_embed / .encoder              question_encoder.embedding / .lstm
    fc_cat                                           input_proj
    ssp_offer.GCN_Module.t.gcn.l.weight.weight/.bias blocks.t.gcn.layers.l.weight/.bias
    ssp_offer.GAT_down.t / GAT_up.t                  blocks.t.top_down / .bottom_up:
        W3, fusion_1.fc_visual, fusion_1.fc_question     w1, w2, w3
        fusion_2.fc_visual, fusion_2.fc_question         w4, w5
        W6 (D x (D + H)) and its bias                    [w6_node | w6_msg] and w6_node.bias
    ssp_offer.attention.fc_visual/fc_question/fc_Joint readout.w7 / w8 / w9
    que_visual.fc_visual/fc_question/bias            fusion.w10 / w11 / bias
    ans_visual, fc_que, fc_ans (multiple choice)     candidate_fusion, question_proj, candidate_proj
    classifier.i                                     decoder.i
"""

from __future__ import annotations

import argparse
import json
import math
import pickle
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch

from extract.weights import sha256_file
from models.mspan import MSPANConfig, mspan
from pipelines.version import toolkit_version
from train.checkpoint import save_checkpoint
from train.config import config_to_dict
from train.tools.convert.official_weights import (
    OfficialFileError,
    describe_file,
    read_answer_vocabulary,
    read_question_vocabulary,
)

__all__ = ["ConvertError", "OFFICIAL_SAFE_GLOBALS", "convert_official_mspan", "official_key_map",
           "read_official_checkpoint"]


class ConvertError(ValueError):
    """An official checkpoint or vocabulary file cannot be converted; the message names the file and why."""


#: the classes a released checkpoint pickles besides tensors and plain containers: the ``args`` Namespace
#: and, for MSVD-QA / MSRVTT-QA, the numpy.float64 per-question-word scores (pickled by numpy 1.x under
#: ``numpy.core``, by numpy 2 under ``numpy._core``)
OFFICIAL_SAFE_GLOBALS: list[Any] = [
    argparse.Namespace,
    (np._core.multiarray.scalar, "numpy.core.multiarray.scalar"),
    np._core.multiarray.scalar,
    np.dtype,
    type(np.dtype(np.float64)),
]

#: official ``--question_type`` -> task type
OFFICIAL_TASK_TYPES = {
    "frameqa": "open", "none": "open", "count": "count", "action": "mc", "transition": "mc",
}

#: official ``--dataset`` -> our dataset registry name
OFFICIAL_DATASETS = {"tgif-qa": "tgif", "msvd-qa": "msvd-qa", "msrvtt-qa": "msrvtt-qa"}

_ATT = {"w1": "W3", "w2": "fusion_1.fc_visual", "w3": "fusion_1.fc_question",
        "w4": "fusion_2.fc_visual", "w5": "fusion_2.fc_question"}
_FIXED = {
    "input_proj": "fc_cat",
    "question_encoder.embedding": "linguistic.encoder_embed",
    "question_encoder.lstm": "linguistic.encoder",
    "readout.w7": "ssp_offer.attention.fc_visual",
    "readout.w8": "ssp_offer.attention.fc_question",
    "readout.w9": "ssp_offer.attention.fc_Joint",
    "fusion.w10": "que_visual.fc_visual",
    "fusion.w11": "que_visual.fc_question",
    "fusion.bias": "que_visual.bias",
    "candidate_fusion.w10": "ans_visual.fc_visual",
    "candidate_fusion.w11": "ans_visual.fc_question",
    "candidate_fusion.bias": "ans_visual.bias",
    "question_proj": "fc_que",
    "candidate_proj": "fc_ans",
    "decoder": "classifier",
}


def _official_name(ours: str) -> str:
    """The official key of one of our keys (``w6_msg.weight`` maps into ``W6.weight`` as well)."""
    m = re.fullmatch(r"blocks\.(\d+)\.gcn\.layers\.(\d+)\.(weight|bias)", ours)
    if m:
        t, layer, kind = m.groups()
        return f"ssp_offer.GCN_Module.{t}.gcn.{layer}." + ("weight.weight" if kind == "weight" else "bias")
    m = re.fullmatch(r"blocks\.(\d+)\.(top_down|bottom_up)\.(\w+)\.(weight|bias)", ours)
    if m:
        t, direction, layer, kind = m.groups()
        prefix = f"ssp_offer.{'GAT_down' if direction == 'top_down' else 'GAT_up'}.{t}."
        return prefix + (f"W6.{kind}" if layer.startswith("w6_") else f"{_ATT[layer]}.{kind}")
    for mine, theirs in _FIXED.items():
        if ours == mine or ours.startswith(mine + "."):
            return theirs + ours[len(mine):]
    raise KeyError(f"no official counterpart for {ours!r}")


def official_key_map(our_shapes: dict[str, tuple[int, ...]]) -> dict[str, tuple[int, ...]]:
    """The official keys and shapes that correspond to our state dict's keys and shapes.

    Args:
        our_shapes: our key -> shape (of an ``MSPAN`` in the ``"official"`` setting, iterations not shared).

    Returns:
        official key -> shape (``W6.weight`` is D x (D + H): the columns of ``w6_node`` then ``w6_msg``).
    """
    out: dict[str, tuple[int, ...]] = {}
    for key, shape in our_shapes.items():
        if key.endswith("w6_msg.weight"):
            continue
        official = _official_name(key)
        if key.endswith("w6_node.weight"):
            msg = our_shapes[key.replace("w6_node", "w6_msg")]
            shape = (shape[0], shape[1] + msg[1])
        out[official] = tuple(shape)
    return out


_EXPECTED = ("expected a checkpoint saved by the official MSPAN training script: torch.save of "
             "{'args': argparse.Namespace, 'model': state dict, ...}")


def read_official_checkpoint(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Read a released checkpoint with ``weights_only=True`` and :data:`OFFICIAL_SAFE_GLOBALS`.

    Returns:
        ``(state_dict, args)`` with ``args`` as a plain dict.
    """
    try:
        with torch.serialization.safe_globals(OFFICIAL_SAFE_GLOBALS):
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        found = re.search(r"Unsupported global: GLOBAL (\S+)", str(exc))
        if found is None:
            raise ConvertError(f"{path} {describe_file(path)}; {_EXPECTED}") from None
        raise ConvertError(
            f"{path}: holds a {found.group(1)} object, which the official MSPAN checkpoints do not (they "
            f"hold an argparse.Namespace, scores and a state dict); refused without unpickling it"
        ) from None
    except Exception:  # noqa: BLE001 - whatever torch's reader trips on, say what the file is
        raise ConvertError(f"{path} {describe_file(path)}; {_EXPECTED}") from None
    if isinstance(obj, dict) and obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ConvertError(
            f"{path} holds a bare state dict ({len(obj)} tensors, e.g. {sorted(obj)[0]!r}) without the "
            f"official training script's 'args' (the model's sizes and question type); {_EXPECTED}"
        )
    if not isinstance(obj, dict) or "model" not in obj or "args" not in obj:
        keys = sorted(map(str, obj)) if isinstance(obj, dict) else []
        what = (f"a dict with the keys {', '.join(keys[:6])}{', ...' if len(keys) > 6 else ''}" if keys
                else f"a {type(obj).__name__}")
        raise ConvertError(f"{path} holds {what}; {_EXPECTED}")
    state, args = obj["model"], obj["args"]
    if not isinstance(args, argparse.Namespace):
        raise ConvertError(f"{path}: 'args' should be the training script's argparse.Namespace, got "
                           f"{type(args).__name__}")
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ConvertError(f"{path}: 'model' should be a state dict of tensors")
    return dict(state), vars(args)


def config_from_official(args: dict[str, Any], state: dict[str, torch.Tensor], path: Path) -> MSPANConfig:
    """The ``variant="official"`` config of the network the official ``args`` describe."""
    needed = ("question_type", "num_scale", "K", "T", "num_frames", "word_dim", "module_dim", "app_pool5_dim",
              "motion_dim", "dropout")
    missing = [k for k in needed if k not in args]
    if missing:
        raise ConvertError(f"{path}: its args lack {missing}; is this an MSPAN checkpoint?")
    layers = sum(1 for k in state if re.fullmatch(r"linguistic\.encoder\.weight_ih_l\d+", k))
    try:
        return MSPANConfig(
            num_frames=args["num_frames"], appearance_dim=args["app_pool5_dim"],
            motion_dim=args["motion_dim"], node_dim=args["app_pool5_dim"], hidden_dim=args["module_dim"],
            word_dim=args["word_dim"],
            lstm_layers=max(layers, 1), num_scales=args["num_scale"], iterations=args["K"],
            gcn_layers=args["T"], share_iteration_weights=False, dropout=float(args["dropout"]),
            readout_dropout=0.2, variant="official",
        )
    except ValueError as exc:
        raise ConvertError(f"{path}: its args describe no valid MSPAN: {exc}") from None


def _shape_diff(expected: dict[str, tuple[int, ...]], found: dict[str, torch.Tensor]) -> list[str]:
    lines = []
    missing = sorted(set(expected) - set(found))
    unexpected = sorted(set(found) - set(expected))
    if missing:
        lines.append(f"missing keys: {', '.join(missing[:8])}" + (f" (+{len(missing) - 8} more)"
                                                                  if len(missing) > 8 else ""))
    if unexpected:
        lines.append(f"unexpected keys: {', '.join(unexpected[:8])}" + (f" (+{len(unexpected) - 8} more)"
                                                                        if len(unexpected) > 8 else ""))
    for key in sorted(set(expected) & set(found)):
        if tuple(found[key].shape) != expected[key]:
            lines.append(f"{key}: shape {tuple(found[key].shape)}, expected {expected[key]}")
    return lines



def _plain(value: Any) -> Any:
    if isinstance(value, bool | int | str) or value is None:
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return str(value)


def convert_official_mspan(
    src: Path, out: Path, *, vocab: Path | None = None, answers: Path | None = None
) -> dict[str, Any]:
    """Convert ``src`` (a released official checkpoint) into our checkpoint at ``out``.

    Args:
        src: the official ``model_*.pth``.
        out: where to write our checkpoint (atomically).
        vocab: the official question vocabulary ``*_vocab.json`` ({token: index}); stored as
            ``meta["question_vocab"]`` (``<NULL>``/``<UNK>`` renamed to our ``<pad>``/``<unk>``) with
            ``meta["text_rule"]`` (``pipelines.official_text``), which evaluation then uses; without it
            the checkpoint records no question vocabulary and ``vqa-train --eval-only`` refuses it.
        answers: the official ``*_answers_list.json`` ({answer: index}); open-ended only, stored as
            ``meta["answer_vocab"]``.

    Returns:
        The written ``meta``.

    Raises:
        ConvertError: unreadable or disallowed file, unknown task, or keys/shapes that do not match the
            network its args describe (the message lists what differs).
    """
    src, out = Path(src), Path(out)
    state, args = read_official_checkpoint(src)
    task_type = OFFICIAL_TASK_TYPES.get(args.get("question_type"))
    if task_type is None:
        raise ConvertError(f"{src}: unknown question_type {args.get('question_type')!r}; expected one of "
                           f"{', '.join(OFFICIAL_TASK_TYPES)}")
    cfg = config_from_official(args, state, src)
    ours, vocab_size, num_answers = _check_network(src, state, args, cfg, task_type)
    converted = _converted_state(state, ours)
    if answers is not None and task_type != "open":
        raise ConvertError(f"{answers}: an answer list applies to open-ended checkpoints; {src} is "
                           f"{args.get('question_type')} ({task_type})")
    try:
        question_vocab = read_question_vocabulary(vocab, vocab_size) if vocab is not None else None
        answer_vocab = read_answer_vocabulary(answers, num_answers) if answers is not None else []
    except OfficialFileError as exc:
        raise ConvertError(str(exc)) from None
    meta = _converted_meta(src, args, cfg, task_type, question_vocab, answer_vocab)
    out.parent.mkdir(parents=True, exist_ok=True)
    save_checkpoint(out, {"model": converted, "meta": meta})
    return meta


def _check_network(src: Path, state: dict, args: dict, cfg: MSPANConfig, task_type: str):
    """Our network's parameter shapes for the official ``args`` (built on the meta device), its vocabulary
    size and answer count, after checking that ``state`` holds exactly those parameters."""
    emb = state.get("linguistic.encoder_embed.weight")
    if emb is None or emb.dim() != 2:
        raise ConvertError(f"{src}: no 2-d 'linguistic.encoder_embed.weight'; is this an MSPAN checkpoint?")
    vocab_size = emb.shape[0]
    num_answers = 0
    if task_type == "open":
        last = state.get("classifier.4.weight")
        if last is None or last.dim() != 2:
            raise ConvertError(f"{src}: an open-ended checkpoint needs 'classifier.4.weight'")
        num_answers = last.shape[0]
    with torch.device("meta"):  # shapes only: nothing allocated
        ref = mspan(cfg, vocab_size=vocab_size, num_answers=num_answers, task_type=task_type)
    ours = {k: tuple(v.shape) for k, v in ref.state_dict().items()}
    diff = _shape_diff(official_key_map(ours), state)
    if diff:
        raise ConvertError(f"{src}: does not match the MSPAN its args describe "
                           f"({args.get('question_type')}, K={args['K']}, T={args['T']}): " + "; ".join(diff))
    return ours, vocab_size, num_answers


def _converted_state(state: dict, ours: dict[str, tuple[int, ...]]) -> dict[str, torch.Tensor]:
    """Our state dict from the official one: renamed, and the official W6 split into its node and
    message halves (our ``w6_node`` / ``w6_msg``)."""
    converted: dict[str, torch.Tensor] = {}
    for key in ours:
        if key.endswith("w6_node.weight") or key.endswith("w6_msg.weight"):
            w6 = state[_official_name(key)]
            d = ours[key.replace("w6_msg", "w6_node")][1]
            part = w6[:, :d] if key.endswith("w6_node.weight") else w6[:, d:]
            converted[key] = part.detach().clone().contiguous()
        else:
            converted[key] = state[_official_name(key)].detach().clone()
    return converted


def _converted_meta(src: Path, args: dict, cfg: MSPANConfig, task_type: str,
                    question_vocab: list[str] | None, answer_vocab: list[str]) -> dict[str, Any]:
    """The checkpoint's ``meta``: our config, the vocabularies, the source file and its official args."""
    meta = {
        "model_name": "mspan",
        "task_type": task_type,
        "model_config": json.dumps(config_to_dict(cfg), sort_keys=True),
        "answer_vocab": answer_vocab,
        "toolkit_version": toolkit_version(),
        "converted_from": json.dumps({
            "file": src.name, "sha256": sha256_file(src),
            "official_args": {k: _plain(v) for k, v in args.items()},
        }, sort_keys=True),
    }
    if question_vocab is not None:  # evaluation encodes text as the official preprocessing did
        meta["question_vocab"] = question_vocab
        meta["text_rule"] = "mspan-msqa" if args.get("dataset") in ("msvd-qa", "msrvtt-qa") else "mspan-tgif"
    dataset = OFFICIAL_DATASETS.get(args.get("dataset"))
    if dataset is not None:  # the dataset and task it was trained on, as our registry names them
        meta["dataset"] = dataset
        meta["task"] = args["question_type"] if dataset == "tgif" else None
    return meta

