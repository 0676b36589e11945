"""What every store shares, so their answers agree: the paging cursor, page limits,
and the error of a job whose lease kept expiring.
"""

from __future__ import annotations

import base64
import binascii
import json
import math

#: Largest page a caller may ask for; a guard against unbounded reads.
MAX_PAGE = 1000


def encode_cursor(created_at: float, job_id: str) -> str:
    """The opaque paging cursor both stores use: the last row's sort key."""
    raw = json.dumps([created_at, job_id], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def decode_cursor(cursor: str) -> tuple[float, str]:
    """Parse a cursor from :func:`encode_cursor`; anything else is a ``ValueError``."""
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        value = json.loads(base64.urlsafe_b64decode(padded.encode("ascii")))
    except (ValueError, binascii.Error, UnicodeError) as exc:
        raise ValueError("malformed cursor") from exc
    if (
        not isinstance(value, list)
        or len(value) != 2
        or isinstance(value[0], bool)
        or not isinstance(value[0], int | float)
        or not math.isfinite(value[0])
        or not isinstance(value[1], str)
    ):
        raise ValueError("malformed cursor")
    return float(value[0]), value[1]


def check_limit(limit: int) -> None:
    if not 1 <= limit <= MAX_PAGE:
        raise ValueError(f"limit must be between 1 and {MAX_PAGE}")


#: The error of a job that ``requeue_expired`` failed; ``{}`` is its number of attempts.
#: The SQL store builds the same text in SQL.
EXPIRED_ERROR = "gave up after {} attempts: the job's lease expired each time"


def held_by(holder: str | None) -> str:
    """The end of a :class:`~primaa.jobs.storage.StaleJob` message for a fenced write."""
    return "" if holder is None else f" under a lease held by {holder}"
