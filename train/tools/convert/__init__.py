"""``vqa-convert``: turn a paper's released checkpoint into a checkpoint of this toolkit.

Usage::

    vqa-convert mspan OFFICIAL_FILE --out FILE [--vocab VOCAB_JSON] [--answers ANSWERS_JSON]
    vqa-convert masn OFFICIAL_FILE --out FILE [--task-type open|mc|count] [--num-frames 20]
                [--vocab WORD_TO_INDEX_PKL] [--answers ANS_TO_INDEX_PKL]
    python -m train.tools.convert mspan ...

One subcommand per model whose authors release checkpoints: the click command its recipe names
(``train/recipes/``, ``Recipe.converter``: ``mspan_command`` and ``masn_command`` below; conversion
logic in ``mspan.py`` and ``masn.py``), added by :func:`build_cli` in the order of ``RECIPES``.
MSPAN's released files are read with ``torch.load(weights_only=True)`` and an allow-list of exactly the
types they hold; MASN's are whole pickled modules, read by the restricted unpickler of
``train/tools/convert/official_weights.py``, which collects tensors and never constructs a class from
the file. A file whose keys or shapes do not match is refused with a message naming what
differs. The
written checkpoint is the ``model`` + ``meta`` format of ``train/checkpoint.py``
(``vqa-train MODEL --eval-only --checkpoint FILE``). With ``--vocab`` (and ``--answers`` for open-ended
tasks) it also stores the official vocabularies and the official tokenisation rule
(``pipelines/official_text.py``), with which evaluation encodes the dataset's questions and answers;
vocabulary files are read with ``json`` or an unpickler that builds only dicts, lists, strings and
integers, and one whose size is not the checkpoint's embedding rows or answer outputs is refused.
"""

from __future__ import annotations

import importlib
import json
from pathlib import Path

import click

from train.recipes import RECIPES
from train.tools.convert.masn import ConversionError, convert_masn
from train.tools.convert.mspan import ConvertError, convert_official_mspan
from train.tools.convert.official_weights import OfficialFileError

__all__ = ["build_cli", "converter_command", "main"]

_FILE = click.Path(exists=True, dir_okay=False, path_type=Path)


@click.command(name="mspan")
@click.argument("official_file", type=_FILE)
@click.option("--out", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="Checkpoint to write (atomically).")
@click.option("--vocab", type=_FILE, default=None,
              help="The official question vocabulary (..._vocab.json), stored in the checkpoint.")
@click.option("--answers", type=_FILE, default=None,
              help="Open-ended: the official answer list (..._answers_list.json), stored in the checkpoint.")
def mspan_command(official_file: Path, out: Path, vocab: Path | None, answers: Path | None) -> None:
    """Convert a checkpoint released with the official MSPAN code (gzcsudo/MSPAN-VideoQA).

    The model is MSPAN in the variant="official" setting (what the official network computes). With
    --vocab (and --answers), evaluation encodes questions as the official preprocessing did.
    """
    try:
        meta = convert_official_mspan(official_file, out, vocab=vocab, answers=answers)
    except ConvertError as exc:
        raise click.ClickException(str(exc)) from None
    extras = [f"{len(meta['question_vocab'])}-word question vocabulary"] if "question_vocab" in meta else []
    extras += [f"{len(meta['answer_vocab'])} answers"] if meta["answer_vocab"] else []
    click.echo(f"{official_file} -> {out}: MSPAN (variant official, {meta['task_type']})"
               + (f" with its {' and '.join(extras)}" if extras else "")
               + ("" if "question_vocab" in meta else
                  "; pass --vocab (the official ..._vocab.json) to make it evaluable"))


@click.command(name="masn")
@click.argument("official_file", type=click.Path(path_type=Path))
@click.option("--out", required=True, type=click.Path(path_type=Path), help="Converted checkpoint to write.")
@click.option("--task-type", type=click.Choice(["open", "mc", "count"]), default=None,
              help="open (FrameQA, MSVD/MSRVTT-QA), mc (Action, Transition) or count; needed when the answer "
                   "layer has one output.")
@click.option("--num-frames", type=click.IntRange(min=1), default=20, show_default=True,
              help="T of the features the checkpoint was trained on (20 TGIF-QA, 30 MSVD/MSRVTT-QA).")
@click.option("--vocab", type=_FILE, default=None,
              help="The official question vocabulary (word_to_index_<Task>.pkl), stored in the checkpoint; "
                   "needed to evaluate it.")
@click.option("--answers", type=_FILE, default=None,
              help="Open-ended: the official answer list (ans_to_index_<Task>.pkl), stored in the "
                   "checkpoint.")
def masn_command(official_file: Path, out: Path, task_type: str | None, num_frames: int,
                 vocab: Path | None, answers: Path | None) -> None:
    """Convert a released MASN checkpoint (whole pickled module or state dict) for `vqa-train masn`.

    Pickled vocabulary files are read without resolving any class (dicts, lists, strings, integers only).
    """
    try:
        meta = convert_masn(official_file, out, task_type=task_type, num_frames=num_frames,
                            vocab=vocab, answers=answers)
    except (OfficialFileError, ConversionError) as exc:
        msg = str(exc) if isinstance(exc, OfficialFileError) else f"{official_file}: {exc}"
        raise click.ClickException(msg) from None
    cfg = json.loads(meta["model_config"])
    then = (f"evaluate with `vqa-train masn --eval-only --checkpoint {out} ...`" if "question_vocab" in meta
            else "pass --vocab (the official word_to_index file) to make it evaluable")
    click.echo(f"wrote {out}: masn ({meta['task_type']}), hidden {cfg['hidden_dim']}, "
               f"question vocabulary {meta['question_vocab_size']}"
               + (f", {len(meta['answer_vocab'])} answers" if meta["answer_vocab"] else "") + f"; {then}")


def converter_command(reference: str) -> click.Command:
    """The click command a recipe's ``converter`` names (``"module:attribute"``)."""
    module, _, attribute = reference.partition(":")
    return getattr(importlib.import_module(module), attribute)


def build_cli() -> click.Group:
    """The ``vqa-convert`` group with one subcommand per model whose recipe names a converter."""
    group = click.Group(name="vqa-convert",
                        help="Convert released checkpoints of the papers' official code into this toolkit's.")
    for recipe in RECIPES.values():
        if recipe.converter is not None:
            group.add_command(converter_command(recipe.converter))
    return group


def main(argv: list[str] | None = None) -> None:
    """Console entry point ``vqa-convert`` (exit statuses as ``pipelines.errors``: a bad file is one line)."""
    from pipelines.errors import run_cli

    run_cli(build_cli(), argv, prog_name="vqa-convert",
            user_errors=lambda: (ConvertError, ConversionError, OfficialFileError))

