"""How long a running job has left, from the pace of its recent progress reports.

The pace is measured by the runner itself, over the reports of this run only: a job resumed at
step 90 of 100 is timed by the steps it makes now, not by the whole span since its first start,
and the time before the first report (loading a model, splitting data) does not count as a step.
Until a couple of steps have been made there is no pace to go by, and the estimate is unknown.
"""

from __future__ import annotations

from collections import deque

# Reports (after the first) before an estimate is given, and how many recent ones set the pace.
MIN_INTERVALS = 2
WINDOW = 20


class Pace:
    """Progress reports ``(time, fraction done)`` of one run; ``seconds_left`` from the recent rate."""

    def __init__(self, window: int = WINDOW, min_intervals: int = MIN_INTERVALS) -> None:
        self.samples: deque[tuple[float, float]] = deque(maxlen=window + 1)
        self.min_intervals = min_intervals

    def report(self, at: float, done: float) -> None:
        """A report at ``at`` (seconds, any monotonic clock) with ``done`` of the work (0..1) made."""
        if self.samples and done <= self.samples[-1][1]:
            # No step since the last report (a message only): the pace is measured between steps.
            if done < self.samples[-1][1]:
                self.samples.clear()  # progress went back (a new phase): start measuring again
            else:
                return
        self.samples.append((at, done))

    def seconds_left(self, now: float) -> float | None:
        """Time to finish at the recent rate, counted from ``now``; None until there is a pace."""
        if len(self.samples) < self.min_intervals + 1:
            return None
        (first_at, first_done), (last_at, last_done) = self.samples[0], self.samples[-1]
        if last_at <= first_at:
            return None
        rate = (last_done - first_done) / (last_at - first_at)
        return max(0.0, (1.0 - last_done) / rate - (now - last_at))


def describe(seconds: float | None) -> str:
    """"about 40 s left", "about 12 min left", "about 3 h 5 min left"; "" when unknown."""
    if seconds is None:
        return ""
    if seconds < 90:
        return f"about {round(seconds)} s left"
    minutes = round(seconds / 60)
    if minutes < 90:
        return f"about {minutes} min left"
    return f"about {minutes // 60} h {minutes % 60} min left"
