"""``vqa-answer`` (also ``python -m train.tools.answer``): the command line over
:class:`train.tools.answer.Answerer`. Outputs are checked before any work; a batch's answers that cannot be
written go to stdout."""

from __future__ import annotations

import errno
import json
import os
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import click

from extract.rebuild import RebuildError
from train.tools.answer.api import Answerer
from train.tools.answer.batch import BadRequest, parse_segment, read_requests
from train.tools.answer.results import Answer, AnswerError

__all__ = ["check_writable", "format_answer", "main", "parse_backbones"]


def parse_backbones(items: Sequence[str]) -> dict[str, str]:
    """``["resnet152=/w/r152.pth", ...]`` -> dict (``--backbone NAME=PATH``)."""
    out = {}
    for item in items:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            raise AnswerError(
                f"--backbone {item!r}: expected NAME=PATH, e.g. resnet152=weights/resnet152.pth"
            )
        out[name.strip()] = path.strip()
    return out




def format_answer(result: Answer) -> str:
    """The human-readable table of one answer (its task kind's)."""
    return "\n".join(result.kind.answer_table(result))


# ------------------------------------------------------------------------------------------- command line
_EPILOG = """\b
Examples:
  vqa-answer --checkpoint RUN/checkpoints/best.pt --video clip.mp4 --question "what is the man riding ?"
  vqa-answer --checkpoint best.pt --video clip.mp4 --question "what does he do ?" --candidates "run|jump|sit"
  vqa-answer --checkpoint CMIN_RUN/checkpoints/best.pt --video v.mp4 --query "a man opens the door" --json
  vqa-answer --checkpoint best.pt --questions questions.jsonl --output answers.jsonl
  vqa-answer --checkpoint best.pt --video clip.mp4 --question "..." --explain figure.png
A --questions line: {"video": "clip.mp4", "question": "...", "candidates": ["a", "b"] (multiple choice),
"segment": [start, end] (seconds; How2QA), "subtitle": "..." (How2QA models trained with subtitles)}
or {"video": "clip.mp4", "query": "..."} (moment retrieval)
(relative video paths are read from the current directory; other keys such as "id" are copied).
"""



def _cli(
    checkpoint,
    video,
    question,
    candidates,
    query,
    as_json,
    questions,
    output,
    checkpoint_dir,
    backbone,
    device,
    top_k,
    explain,
    ground_truth,
    segment,
    text_encoder=None,
    features_like=None,
    subtitle=None,
) -> int:
    if questions is None and (video is None or (question is None and query is None)):
        raise AnswerError("give --video and --question (or --query), or a --questions FILE.jsonl")
    if questions is not None and (video or question or query):
        raise AnswerError("--questions FILE answers the file's lines; drop --video/--question/--query")
    for option, target in (("--output", output), ("--explain", explain)):
        if target is not None:  # before any work: a whole batch is not lost to an unwritable output
            check_writable(Path(target), option)
    requests = read_requests(questions) if questions is not None else None
    answerer = Answerer.from_checkpoint(
        checkpoint, backbones=parse_backbones(backbone), checkpoint_dir=checkpoint_dir, device=device,
        text_encoder=text_encoder, features_like=features_like,
    )
    if answerer.random_weights:
        click.echo(answerer.random_weights_banner, err=True)
    click.echo(answerer.describe(), err=True)
    if answerer.query_note:
        click.echo(f"note: {answerer.query_note}", err=True)
    if answerer.features_note:
        click.echo(f"note: {answerer.features_note}", err=True)
    if requests is not None:
        return _answer_batch(answerer, requests, output, top_k)
    return _answer_one(answerer, video, question, query, candidates, segment, subtitle, top_k, as_json,
                       explain, ground_truth)


def _answer_batch(answerer: Answerer, requests: list[dict[str, Any] | BadRequest], output: Path | None,
                  top_k: int) -> int:
    """``--questions``: one JSON line per request (stdout or ``--output``); 3 when some failed."""
    from pipelines.atomic import atomic_path  # looked up at call time (tests simulate a full disk)

    results = answerer.answer_many(requests, top_k=top_k)
    text = "".join(json.dumps(r) + "\n" for r in results)
    if output:
        try:
            with atomic_path(Path(output)) as tmp:
                tmp.write_text(text, encoding="utf-8")
        except OSError as exc:  # e.g. the disk filled during the work: the answers go to stdout
            sys.stdout.write(text)
            raise AnswerError(_cannot_write(Path(output), "--output", exc)
                              + "; the answers were written to stdout instead") from None
    else:
        sys.stdout.write(text)
    failed = [r for r in results if "error" in r]
    click.echo(
        f"{len(results) - len(failed)} answered, {len(failed)} failed"
        + (f" (e.g. {failed[0]['error']})" if failed else "")
        + (f"; answers in {output}" if output else ""),
        err=True,
    )
    return 3 if failed else 0


def _answer_one(answerer: Answerer, video, question, query, candidates, segment, subtitle, top_k, as_json,
                explain, ground_truth) -> int:
    """One question (or query): the table or ``--json`` line, and the ``--explain`` figure."""
    cands = [c.strip() for c in candidates.split("|")] if candidates else None
    text = query if query is not None else question
    takes_query = answerer.kind.text_key == "query"
    if query is not None and not takes_query:
        raise AnswerError(
            f"--query is for moment-retrieval models; this one is {answerer.task_type}: use --question"
        )
    if query is None and takes_query:
        raise AnswerError('this is a moment-retrieval model: give the sentence to find with --query "..."')
    result = answerer.answer(
        video, text, candidates=cands, segment=parse_segment(segment, "--segment"), top_k=top_k,
        subtitle=subtitle,
    )
    for note in result.notes():
        click.echo(f"note: {note}", err=True)
    if as_json:
        line = result.to_json()
        if answerer.random_weights:
            line["random_weights"] = True
        click.echo(json.dumps(line))
    else:
        click.echo(format_answer(result))
    if explain:
        from train.tools.explain import render_explanation

        try:
            render_explanation(result, answerer, explain, ground_truth=parse_segment(ground_truth))
        except OSError as exc:
            raise AnswerError(_cannot_write(Path(explain), "--explain", exc)) from None
        click.echo(f"explanation figure: {explain}", err=True)
    return 0


def _cannot_write(path: Path, option: str, exc: OSError) -> str:
    """``cannot write OPTION PATH: <reason>; <what to do>`` for an output that failed."""
    reason = os.strerror(exc.errno) if exc.errno else str(exc)
    advice = {
        errno.ENOSPC: f"free some space or give {option} another path",
        errno.EDQUOT: f"the disk quota is exhausted; free some space or give {option} another path",
        errno.EROFS: f"the file system is read-only; give {option} a path on another one",
        errno.EACCES: f"check the permissions of {path.parent} or give {option} another path",
        errno.EPERM: f"check the permissions of {path.parent} or give {option} another path",
    }.get(exc.errno, f"give {option} another path")
    return f"cannot write {option} {path}: {reason}; {advice}"


def check_writable(path: Path, option: str) -> None:
    """Refuse, before any work, an output file that cannot be written: a directory, a missing or read-only
    directory, a full disk (a 64 KiB probe file is written, synced and removed next to ``path``).

    Raises:
        AnswerError: naming ``option`` and ``path`` and what to do.
    """
    if path.is_dir():
        raise AnswerError(f"{option} {path} is a directory; give a file name")
    parent = path.parent
    if parent.exists() and not parent.is_dir():
        raise AnswerError(f"cannot write {option} {path}: {parent} is not a directory; give {option} "
                          "another path")
    try:
        parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=parent, prefix=f".tmp-{path.name}.") as probe:
            probe.write(bytes(64 << 10))
            probe.flush()
            os.fsync(probe.fileno())
    except OSError as exc:
        raise AnswerError(_cannot_write(path, option, exc)) from None


def _question_options(command: Any) -> Any:
    """``vqa-answer``'s options of what to ask about which video, and where the answers go."""
    for option in reversed([
        click.option(
            "--checkpoint",
            required=True,
            type=click.Path(dir_okay=False, path_type=Path),
            help="A self-contained checkpoint (RUN/checkpoints/best.pt or epoch-NNNN.pt).",
        ),
        click.option("--video", type=click.Path(path_type=Path), help="The video file."),
        click.option("--question", help="The question (open-ended, multiple choice, count)."),
        click.option("--candidates", help='Multiple choice: the candidates, "a|b|c|d|e".'),
        click.option("--query", help="Moment-retrieval models: the sentence to find in the video."),
        click.option(
            "--segment",
            metavar="START,END",
            help="The question's segment in seconds, for models trained on questions with one (How2QA's ts).",
        ),
        click.option(
            "--subtitle",
            metavar="TEXT",
            help="The subtitle text of the question's segment, for models trained with subtitles (How2QA).",
        ),
        click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of the table."),
        click.option(
            "--questions",
            type=click.Path(dir_okay=False, path_type=Path),
            help='Batch mode: a JSONL file, one {"video", "question"|"query", "candidates"?} per line.',
        ),
        click.option(
            "--output",
            type=click.Path(dir_okay=False, path_type=Path),
            help="Batch mode: write the answers' JSONL here (default: stdout).",
        ),
    ]):
        command = option(command)
    return command


def _model_options(command: Any) -> Any:
    """``vqa-answer``'s options of the model's files, device and output."""
    for option in reversed([
        click.option(
            "--checkpoint-dir",
            type=click.Path(file_okay=False, path_type=Path),
            help="Directory holding the backbone weight files recorded in the checkpoint (by file name).",
        ),
        click.option(
            "--backbone",
            multiple=True,
            metavar="NAME=PATH",
            help="A backbone's weight file (repeatable); its sha256 must be the recorded one.",
        ),
        click.option(
            "--text-encoder",
            type=click.Path(path_type=Path),
            help="Models with a transformer question encoder: its local checkpoint directory (default: the "
            "recorded one); its files' sha256 must be the recorded ones.",
        ),
        click.option(
            "--features-like",
            type=click.Path(file_okay=False, path_type=Path),
            help="Models trained on imported (released) features: a feature directory vqa-extract made with "
            "backbones that reproduce them; new videos are extracted as it was (docs/reproduce.md).",
        ),
        click.option("--device", default="cpu", show_default=True, help="cpu, cuda, cuda:1, ..."),
        click.option(
            "--top-k",
            default=5,
            show_default=True,
            type=click.IntRange(1),
            help="Open-ended: how many answers to show; moment retrieval: how many moments.",
        ),
        click.option(
            "--explain",
            type=click.Path(dir_okay=False, path_type=Path),
            help="Write a figure of what the model attended to (PNG).",
        ),
        click.option(
            "--ground-truth",
            metavar="START,END",
            help="Moment models with --explain: the true moment in seconds, drawn on the timeline.",
        ),
    ]):
        command = option(command)
    return command


def main(argv: Sequence[str] | None = None) -> None:
    """``vqa-answer`` (also ``python -m train.tools.answer``); exit statuses as ``pipelines.errors``: 0,
    1 user error, 2 usage, 3 batch mode with some questions unanswered (their error lines are written),
    130."""
    from pipelines.errors import run_cli

    @click.command(
        context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110}, epilog=_EPILOG
    )
    @_question_options
    @_model_options
    def command(**kwargs):
        """Answer a question about a video with a trained model (features recomputed from the raw video)."""
        return _cli(**kwargs)

    run_cli(command, argv, prog_name="vqa-answer", user_errors=_user_errors,
            interrupted_hint="nothing was written; re-run the command")


def _user_errors() -> tuple[type[BaseException], ...]:
    from train.checkpoint import CheckpointError as _CkptError

    return (AnswerError, RebuildError, _CkptError)
