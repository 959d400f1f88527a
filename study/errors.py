"""The errors oodstudy raises for bad input: one base class, one kind per room.

Every error below :class:`OodstudyError` carries a message that names what is wrong
and how to fix it; the CLI prints it as one line, ``oodstudy: <message>``, and exits
with code 2.  Anything else that escapes is a bug and keeps its traceback.
"""

from __future__ import annotations


class OodstudyError(Exception):
    """Input oodstudy cannot use as given; the message says why and what to do."""


class ConfigError(OodstudyError, ValueError):
    """A config that cannot run; the message names each bad field and how to fix it.

    Also a ``ValueError``, so that pydantic validators may raise it.
    """


class StoreError(OodstudyError):
    """A store cannot be opened or written as asked; the message says why and what to do."""


class QueryError(OodstudyError):
    """A SQL query over the store that DuckDB refuses (a mistake in the query itself)."""


class ClusterError(OodstudyError):
    """A Ray cluster that cannot take a study as asked: no answer at the address, a token it
    refuses, a study of that name already running; the message says what to fix."""


class TrialsFailed(Exception):
    """A study that ran to its end with planned trials failed; the message counts them and
    says where their errors are.  Not bad input: the CLI prints it as one line after the
    summary and exits with code 1."""


class Interrupted(Exception):
    """A run stopped by Ctrl-C; the message says what was done and how to continue.
    Not bad input: the CLI prints it as one line and exits with code 130."""
