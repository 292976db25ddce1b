"""The errors a user sees as one line (``error: <message>``, exit 2) instead of a traceback."""

from __future__ import annotations

import re

# the ``:password@`` of a URL's ``user:password@`` part (up to the last ``@`` before its path)
_PASSWORD = re.compile(r"(?P<user>[a-z][a-z0-9+.-]*://[^\s/:@]*):[^\s/]*@", re.IGNORECASE)


class StageError(Exception):
    """A user-facing failure of a stage: the message is one line naming the thing and the fix."""


class ConfigError(StageError, ValueError):
    """A configuration that cannot be used; the message says what to change."""


def shown(value: object, limit: int = 60) -> str:
    """``repr(value)`` for a one-line message: cut to ``limit`` characters with its length said, so a
    10 MB override or a 130,000-digit number is never echoed whole."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}… ({len(text):,} characters)"


def masked(text: str) -> str:
    """``text`` with the password of every ``scheme://user:password@`` URL in it shown as ``***``, so a
    message or log line naming a store never shows its secret."""
    return _PASSWORD.sub(r"\g<user>:***@", text)
