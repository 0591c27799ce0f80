"""How the command-line tools end: one convention for user errors, interrupts and exit statuses.

Every console script (``vqa-extract``, ``vqa-train``) runs its click command through :func:`run_cli`,
so the rules live here once instead of in a ``try``/``except`` around every call:

==========  ===============================================================================
exit status meaning
==========  ===============================================================================
0           success
1           a user error (bad input file, unusable output directory, mismatching run, ...):
            one or two lines on stderr naming the file and what to do, no traceback
2           a command-line usage error (click's convention)
3           ``vqa-extract`` only: the run finished but some videos failed (recorded in the manifest)
130         interrupted (Ctrl-C); re-running the same command resumes
==========  ===============================================================================

``--debug`` (anywhere on the command line) or ``VQA_DEBUG=1`` shows the Python traceback of a user
error instead. Errors that are not a user's (bugs) always show their traceback.
"""

from __future__ import annotations

import errno
import os
import re
import sys
from collections.abc import Callable, Sequence

import click

__all__ = ["EXIT_INTERRUPTED", "EXIT_USER_ERROR", "run_cli", "user_error_message"]

EXIT_USER_ERROR = 1
EXIT_INTERRUPTED = 130
#: ``OSError`` numbers that describe the user's files or machine, not a bug
_USER_ERRNOS = frozenset(
    {errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOSPC, errno.EDQUOT, errno.ENOENT, errno.ENOTDIR,
     errno.EISDIR, errno.ENAMETOOLONG, errno.EMFILE, errno.EFBIG}
)


def _pop_debug(args: list[str]) -> bool:
    """Remove ``--debug`` from ``args`` (before a ``--`` separator); True when it was there."""
    end = args.index("--") if "--" in args else len(args)
    found = "--debug" in args[:end]
    args[:] = [a for i, a in enumerate(args) if not (i < end and a == "--debug")]
    return found


def user_error_message(exc: BaseException, user_errors: tuple[type[BaseException], ...]) -> str | None:
    """The message to show for ``exc`` when it is a user error, else None (a bug: show the traceback)."""
    if isinstance(exc, user_errors):
        text = str(exc).strip()
        if "Traceback (most recent call last)" in text:  # re-raised from a worker: keep its own message
            last = [ln for ln in text.splitlines() if ln.strip()][-1]
            text = re.sub(r"^[\w.]+: ", "", last)
        return text.strip("'\"") or type(exc).__name__
    if isinstance(exc, OSError) and exc.errno in _USER_ERRNOS:
        target = exc.filename if exc.filename is not None else "a file"
        advice = {
            errno.EACCES: "check its permissions or choose another --out",
            errno.EPERM: "check its permissions or choose another --out",
            errno.EROFS: "the file system is read-only; choose another --out",
            errno.ENOSPC: "free some space or choose another --out",
            errno.EDQUOT: "the disk quota is exhausted; free some space or choose another --out",
            errno.EFBIG: "the file system (or `ulimit -f`) allows no larger file; choose another --out",
        }.get(exc.errno, "check the path")
        return f"cannot use {target}: {exc.strerror}; {advice}"
    return None


def run_cli(
    command: click.Command,
    argv: Sequence[str] | None,
    *,
    prog_name: str,
    user_errors: Callable[[], tuple[type[BaseException], ...]],
    interrupted_hint: str = "re-run the same command to resume",
) -> None:
    """Run ``command`` as a console script under the conventions above; never returns (``sys.exit``).

    Args:
        command: the click command or group.
        argv: the arguments (default ``sys.argv[1:]``).
        prog_name: the program name for messages.
        user_errors: returns the exception classes that are user errors (called only on an error, so
            heavy modules are imported only then).
        interrupted_hint: what to tell the user after Ctrl-C.
    """
    args = list(sys.argv[1:] if argv is None else argv)
    debug = _pop_debug(args) or os.environ.get("VQA_DEBUG", "") not in ("", "0")
    try:
        rv = command.main(args=args, prog_name=prog_name, standalone_mode=False)
    except click.ClickException as exc:
        if debug and exc.__cause__ is not None:  # a user error converted by the command: show its origin
            raise
        exc.show()
        sys.exit(exc.exit_code)
    except (click.Abort, KeyboardInterrupt):
        if debug:
            raise
        click.echo(f"{prog_name}: interrupted; {interrupted_hint}", err=True)
        sys.exit(EXIT_INTERRUPTED)
    except Exception as exc:  # noqa: BLE001 - sorted into user errors and bugs below
        message = user_error_message(exc, user_errors())
        if message is None or debug:
            raise
        click.echo(f"{prog_name}: error: {message}", err=True)
        sys.exit(EXIT_USER_ERROR)
    sys.exit(rv if isinstance(rv, int) else 0)
