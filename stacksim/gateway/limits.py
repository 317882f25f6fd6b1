"""Rate limits, budgets and cooldowns: small state objects the gateway and providers consult.

A rate limit here is a sliding 60 s window (a log of admissions), so "R per minute" never lets
more than R through in *any* 60 s: stricter than LiteLLM's per-UTC-minute keys, which can admit
2R across a minute boundary. Providers' own limits refill continuously (OpenAI and Anthropic
describe token-bucket style limits), which a sliding window approximates.
"""

from __future__ import annotations

from collections import deque

WINDOW_S = 60.0


class SlidingCount:
    """Events in the last `window_s` seconds."""

    def __init__(self, limit: int | None, window_s: float = WINDOW_S):
        self.limit = limit
        self.window = window_s
        self.times: deque[float] = deque()

    def _trim(self, now: float) -> None:
        t = self.times
        while t and t[0] <= now - self.window:
            t.popleft()

    def count(self, now: float) -> int:
        self._trim(now)
        return len(self.times)

    def allows(self, now: float, n: int = 1) -> bool:
        return self.limit is None or self.count(now) + n <= self.limit

    def add(self, now: float) -> None:
        self.times.append(now)

    def admits_in(self, now: float, n: int = 1) -> float:
        """Seconds until `n` more fit in the window (0 if they fit now): what a 429's Retry-After says."""
        if self.allows(now, n):
            return 0.0
        assert self.limit is not None
        k = len(self.times) + n - self.limit  # entries that must leave the window first
        if k > len(self.times):
            return float("inf")  # n alone exceeds the limit
        return self.times[k - 1] + self.window - now


class SlidingSum:
    """A sum of amounts (tokens) added in the last `window_s` seconds."""

    def __init__(self, limit: int | None, window_s: float = WINDOW_S):
        self.limit = limit
        self.window = window_s
        self.items: deque[tuple[float, float]] = deque()
        self.total = 0.0

    def _trim(self, now: float) -> None:
        it = self.items
        while it and it[0][0] <= now - self.window:
            self.total -= it.popleft()[1]

    def value(self, now: float) -> float:
        self._trim(now)
        return self.total

    def allows(self, now: float, amount: float) -> bool:
        return self.limit is None or self.value(now) + amount <= self.limit

    def add(self, now: float, amount: float) -> None:
        self.items.append((now, amount))
        self.total += amount

    def admits_in(self, now: float, amount: float) -> float:
        """Seconds until `amount` more fits in the window (0 if it fits now)."""
        if self.allows(now, amount):
            return 0.0
        assert self.limit is not None
        need = self.value(now) + amount - self.limit
        for t, a in self.items:
            need -= a
            if need <= 0:
                return t + self.window - now
        return float("inf")  # the amount alone exceeds the limit


def parse_duration_s(text: str) -> float:
    """LiteLLM budget durations: 30s, 5m, 1h, 30d."""
    unit = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}[text[-1]]
    return float(text[:-1]) * unit


class Budget:
    """LiteLLM's budget: spend is checked before a call (spend >= max_budget rejects) and added
    when the call ends, so calls already in flight can carry spend past the cap; the spend resets
    every `duration_s` (windows start at time zero)."""

    def __init__(self, max_usd: float, duration_s: float | None):
        self.max = max_usd
        self.duration = duration_s
        self.window_start = 0.0
        self.spent = 0.0
        self.hit_at: list[float] = []  # times a request was refused
        self.peak_over = 0.0  # largest overshoot past the cap in any window

    def _roll(self, now: float) -> None:
        if self.duration is not None and now >= self.window_start + self.duration:
            k = int((now - self.window_start) // self.duration)
            self.window_start += k * self.duration
            self.spent = 0.0

    def allows(self, now: float) -> bool:
        self._roll(now)
        return self.spent < self.max

    def add(self, now: float, usd: float) -> None:
        self._roll(now)
        self.spent += usd
        self.peak_over = max(self.peak_over, self.spent - self.max)


class Cooldowns:
    """LiteLLM's deployment cooldowns (litellm/router_utils/cooldown_handlers.py, quoted in
    shared/facts/REFERENCE.md section 1.1).

    - Statuses that can cool a deployment: 429, 401, 404, 408 and every 5xx; other 4xx never do.
    - With `allowed_fails` set (legacy logic): a deployment cools down once its failures within
      the last `cooldown_s` exceed `allowed_fails`.
    - Otherwise (v2 default): at once on a 429 in a group of more than one deployment, or on
      401/404/408; on 5xx when more than half of its calls this minute failed, with at least
      DEFAULT_FAILURE_THRESHOLD_MINIMUM_REQUESTS (5) calls, in a group of more than one.
    - A cooled deployment leaves every pick until the deadline; failing again while cooled keeps
      the first deadline (LiteLLM issue #40130).
    """

    MIN_REQUESTS = 5
    FAIL_SHARE = 0.5

    def __init__(self, n_targets: int, cooldown_s: float, allowed_fails: int | None):
        self.until = [0.0] * n_targets
        self.cooldown_s = cooldown_s
        self.allowed_fails = allowed_fails
        self.fails = [SlidingCount(None, max(cooldown_s, 1e-9)) for _ in range(n_targets)]
        self.minute = [(-1, 0, 0)] * n_targets  # (minute index, calls, fails)
        self.events: list[tuple[int, float, float]] = []  # (target, start, end)

    def cooled(self, t: int, now: float) -> bool:
        return now < self.until[t]

    def record(self, t: int, now: float, status: int, group_size: int) -> None:
        m, calls, fails = self.minute[t]
        mi = int(now // 60.0)
        if mi != m:
            calls, fails = 0, 0
        failed = status >= 400
        self.minute[t] = (mi, calls + 1, fails + int(failed))
        if self.cooldown_s <= 0 or not failed or self.cooled(t, now):
            return
        if not (status in (401, 404, 408, 429) or status >= 500):
            return
        if self.allowed_fails is not None:
            self.fails[t].add(now)
            if self.fails[t].count(now) > self.allowed_fails:
                self._cool(t, now)
            return
        if status in (401, 404, 408) or (status == 429 and group_size > 1):
            self._cool(t, now)
            return
        if status >= 500 and group_size > 1:
            _, c, f = self.minute[t]
            if c >= self.MIN_REQUESTS and f / c > self.FAIL_SHARE:
                self._cool(t, now)

    def _cool(self, t: int, now: float) -> None:
        self.until[t] = now + self.cooldown_s
        self.events.append((t, now, now + self.cooldown_s))
