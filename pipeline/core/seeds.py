"""One recipe for every derived random seed, so draws depend on what they are for, not on order."""

from __future__ import annotations

import hashlib


def derived_seed(*parts: int | str) -> int:
    """A 63-bit seed from ``parts`` (``seed, epoch, index``...) via sha256: equal parts, equal seed,
    on every machine, and unrelated seeds for neighbouring parts."""
    digest = hashlib.sha256("/".join(str(part) for part in parts).encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1
