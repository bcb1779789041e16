"""How errors reach the user: UserError (from zyn_models) is a mistake the user can fix, shown as one line
`error: <what, where, how to fix>`; ModelLoadError says which judge could not be found and what was tried."""

from __future__ import annotations

from zyn_models import UserError


class ModelLoadError(UserError, OSError):
    """A judge could not be found or loaded; the message says what was tried and how to fix it."""


def one_line(error: BaseException) -> str:
    """An error as one line: its message with the newlines folded (a missing file reads `path: reason`)."""
    text = str(error).strip() or type(error).__name__
    if isinstance(error, (FileNotFoundError, IsADirectoryError)) and error.filename:
        text = f"{error.filename}: {error.strerror}; check the path"
    return " ".join(text.split())
