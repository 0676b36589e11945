"""When to try a callback again: a strategy object, separate from the delivery loop."""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Callable, Sequence


@dataclasses.dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Delays between attempts after the first, with jitter so receivers are not stampeded.

    The default schedule follows Standard Webhooks' recommendation: 5 s, 5 min,
    30 min, 2 h, 5 h, 10 h, 10 h — about a day in all.
    """

    schedule: Sequence[float] = (5, 300, 1800, 7200, 18000, 36000, 36000)
    #: Each delay is scaled by a random factor in [1 - jitter, 1 + jitter].
    jitter: float = 0.1
    random: Callable[[], float] = random.random

    def next_delay(self, attempts_made: int, status_code: int | None) -> float | None:
        """Seconds until the next attempt, or ``None`` to give up.

        ``attempts_made`` counts the attempt that just failed.
        """
        if status_code == 410:
            return None
        if attempts_made > len(self.schedule):
            return None
        delay = self.schedule[attempts_made - 1]
        return delay * (1 + self.jitter * (2 * self.random() - 1))
