"""How often one address may fail to sign in. Pure: the time is an argument."""

from __future__ import annotations

from collections import OrderedDict, deque
from datetime import datetime, timedelta


class Throttle:
    """At most `limit` failures per key within `window`; past that, the key waits until its
    oldest failure leaves the window. The `keys` most recent keys are remembered."""

    def __init__(
        self, limit: int = 5, window: timedelta = timedelta(minutes=1), keys: int = 10_000
    ) -> None:
        self.limit, self.window, self.keys = limit, window, keys
        self._failures: OrderedDict[str, deque[datetime]] = OrderedDict()

    def wait(self, key: str, now: datetime) -> float:
        """Seconds `key` must wait before its next try (0: it may try now)."""
        failures = self._recent(key, now)
        if len(failures) < self.limit:
            return 0.0
        return max((failures[0] + self.window - now).total_seconds(), 0.0)

    def failed(self, key: str, now: datetime) -> None:
        self._recent(key, now).append(now)
        self._failures.move_to_end(key)
        while len(self._failures) > self.keys:
            self._failures.popitem(last=False)

    def _recent(self, key: str, now: datetime) -> deque[datetime]:
        failures = self._failures.setdefault(key, deque())
        while failures and failures[0] <= now - self.window:
            failures.popleft()
        return failures
