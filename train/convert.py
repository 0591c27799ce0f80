"""``vqa-convert``: turn a paper's released checkpoint into a checkpoint of this toolkit.

Usage::

    vqa-convert mspan OFFICIAL_FILE --out FILE [--vocab VOCAB_JSON] [--answers ANSWERS_JSON]
    python -m train.convert mspan ...

One subcommand per model whose authors release checkpoints. The released files are read with
``torch.load(weights_only=True)`` and an allow-list of exactly the types they hold; a file whose keys
or shapes do not match is refused with a message naming what differs. The written checkpoint is the
``model`` + ``meta`` format of ``train/checkpoint.py`` (``vqa-train MODEL --eval-only --checkpoint FILE``).
"""

from __future__ import annotations

from pathlib import Path

import click

from train.convert_mspan import ConvertError, convert_official_mspan

__all__ = ["build_cli", "main"]

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

    The model is MSPAN in the variant="official" setting (what the official network computes). The
    official tokenizer (nltk) differs from ours: evaluate with the official vocabulary for its numbers.
    """
    try:
        meta = convert_official_mspan(official_file, out, vocab=vocab, answers=answers)
    except ConvertError as exc:
        raise click.ClickException(str(exc)) from None
    extras = [f"{len(meta['question_vocab'])}-word question vocabulary"] if "question_vocab" in meta else []
    extras += [f"{len(meta['answer_vocab'])} answers"] if meta["answer_vocab"] else []
    click.echo(f"{official_file} -> {out}: MSPAN (variant official, {meta['task_type']})"
               + (f" with its {' and '.join(extras)}" if extras else ""))


def build_cli() -> click.Group:
    """The ``vqa-convert`` group with one subcommand per model (explicit list)."""
    group = click.Group(name="vqa-convert",
                        help="Convert released checkpoints of the papers' official code into this toolkit's.")
    group.add_command(mspan_command)
    return group


def main(argv: list[str] | None = None) -> None:
    """Console entry point ``vqa-convert``."""
    build_cli().main(args=argv, prog_name="vqa-convert")


if __name__ == "__main__":
    main()
