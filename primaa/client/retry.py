"""When to send a request again: 429 and 503 after ``Retry-After``, connection errors of
idempotent requests after a backoff; always bounded in count and in total waiting."""

from __future__ import annotations

import dataclasses
import datetime
import email.utils
import random
from collections.abc import Mapping

#: Answers that mean "not now": the service refused before doing anything.
RETRY_STATUSES = frozenset({429, 503})


@dataclasses.dataclass(frozen=True)
class RetryPolicy:
    """``retries`` re-sends at most, waiting ``max_wait`` seconds at most in all.

    A wait is the service's ``Retry-After`` when it sends one, else ``backoff`` doubled
    per attempt; then up to ``jitter`` of it is added at random, so clients refused
    together do not all come back in the same instant. A ``Retry-After`` beyond what is
    left of ``max_wait`` is not waited for: the error is raised at once, with it.
    """

    retries: int = 3
    max_wait: float = 60.0
    backoff: float = 0.25
    jitter: float = 0.1

    def delay(self, attempt: int, retry_after: float | None) -> float:
        """Seconds to wait before attempt ``attempt + 1`` (``attempt`` counts from 1)."""
        base = retry_after if retry_after is not None else self.backoff * 2 ** (attempt - 1)
        return base + random.uniform(0, self.jitter * base)

    def allows(self, attempt: int, waited: float, delay: float) -> bool:
        """Whether another attempt fits: under ``retries`` and the ``max_wait`` budget."""
        return attempt <= self.retries and waited + delay <= self.max_wait


def retry_after(
    headers: Mapping[str, str], *, now: datetime.datetime | None = None
) -> float | None:
    """``Retry-After`` in seconds, from either of its forms (seconds or an HTTP date)."""
    value = headers.get("Retry-After")
    if value is None:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=datetime.UTC)
    now = now or datetime.datetime.now(datetime.UTC)
    return max(0.0, (when - now).total_seconds())
