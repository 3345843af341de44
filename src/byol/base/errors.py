"""The bottom layer: errors a user can fix, how they name a setting, and warnings.

Imports nothing of byol, so every other module may import it.  A ``UserError`` is
printed as one line (what went wrong and how to fix it) with exit status 2; anything
else is a bug.  Messages name a setting with ``setting(name)``: ``--batch-size`` on the
command line (``byol.cli`` runs inside ``command_line()``), ``batch_size`` from Python.
"""
from __future__ import annotations

import contextlib
import contextvars
import os
import sys

_ON_COMMAND_LINE = contextvars.ContextVar("byol_on_command_line", default=False)


class UserError(Exception):
    """Something the user can fix: the message is one line saying what and how."""


class Interrupted(Exception):
    """SIGTERM or Ctrl-C stopped a run after saving a checkpoint; the message says how to go on."""

    def __init__(self, message: str, signal_number: int):
        super().__init__(message)
        self.signal_number = signal_number


def first_line(error: BaseException) -> str:
    """A library's exception text cut to its first line, to quote inside a one-line UserError."""
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def setting(name: str) -> str:
    """How the user wrote setting ``name``: a flag on the command line, a parameter in Python."""
    return "--" + name.replace("_", "-") if _ON_COMMAND_LINE.get() else name


@contextlib.contextmanager
def command_line():
    """Within this block, error messages name flags (``--batch-size``) instead of parameters."""
    token = _ON_COMMAND_LINE.set(True)
    try:
        yield
    finally:
        _ON_COMMAND_LINE.reset(token)


def is_main_process() -> bool:
    """Rank 0 under torchrun (RANK is set by it), or a lone process."""
    return os.environ.get("RANK", "0") == "0"


def warn(message: str) -> None:
    """One line on stderr, from rank 0 only: N processes reading the same data say it once."""
    if is_main_process():
        print(f"byol: warning: {message}", file=sys.stderr)
