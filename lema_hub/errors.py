"""Errors that mean "bad input", not "bug": the CLI prints their message on one line and exits 2.

Stages raise these for a config key, a file or a folder the user got wrong; anything else is a
bug and keeps its traceback. Each class also derives from the builtin a caller would catch
(`ValueError`, `FileNotFoundError`), so `except ValueError` around a stage still works.
"""

from __future__ import annotations


class UserError(Exception):
    """Bad user input; the message names the problem and the file or key."""


class InvalidInputError(UserError, ValueError):
    """A config value, a file's content or a folder's layout is wrong."""


class MissingInputError(UserError, FileNotFoundError):
    """A named input file, folder or dataset does not exist."""
