"""The errors a user sees as one line (``error: <message>``, exit 2) instead of a traceback."""

from __future__ import annotations


class StageError(Exception):
    """A user-facing failure of a stage: the message is one line naming the thing and the fix."""


class ConfigError(StageError, ValueError):
    """A configuration that cannot be used; the message says what to change."""


def shown(value: object, limit: int = 60) -> str:
    """``repr(value)`` for a one-line message: cut to ``limit`` characters with its length said, so a
    10 MB override or a 130,000-digit number is never echoed whole."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}… ({len(text):,} characters)"
