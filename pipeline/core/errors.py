"""The errors a user sees as one line (``error: <message>``, exit 2) instead of a traceback."""

from __future__ import annotations


class StageError(Exception):
    """A user-facing failure of a stage: the message is one line naming the thing and the fix."""


class ConfigError(StageError, ValueError):
    """A configuration that cannot be used; the message says what to change."""
