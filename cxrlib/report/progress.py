"""Terminal progress of a run: which stage, which fold, elapsed and remaining time.

The remaining time is estimated from the stages already executed in this run: each stage
has a cost ``weight`` (see :mod:`cxrlib.report.plan`), and the seconds per unit of weight
measured so far scale the weights still to run. Until one stage has run, it shows ``?``.
On a terminal a heartbeat line is rewritten in place every few seconds while a notebook
runs; in a log (not a TTY) only start/finish lines are printed, plus a heartbeat each minute.
"""

from __future__ import annotations

import sys
import threading
import time
from typing import TextIO


def format_seconds(seconds: float | None) -> str:
    """``75.3 -> '1:15'``, ``3725 -> '1:02:05'``, ``None -> '?'``."""
    if seconds is None:
        return "?"
    s = int(round(max(seconds, 0.0)))
    h, rem = divmod(s, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


class Progress:
    """Progress over a list of weighted stages.

    Args:
        weights: stage id -> estimated cost (any unit).
        title: printed once at the start (experiment and run id).
        stream: where to write (default stderr).
        heartbeat: seconds between heartbeat lines while a stage runs (0 = none).
        name: prefix of every line (the experiment, when several runs share the terminal).
    """

    def __init__(self, weights: dict[str, float], title: str = "", stream: TextIO | None = None,
                 heartbeat: float | None = None, name: str = ""):
        self.weights = dict(weights)
        self.name = f"{name} " if name else ""
        self.stream = stream or sys.stderr
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.heartbeat = (5.0 if self.tty else 60.0) if heartbeat is None else heartbeat
        self.start = time.monotonic()
        self.done_weight = 0.0  # weight of stages executed (not skipped) in this process
        self.done_seconds = 0.0
        self.finished: set[str] = set()
        self._running: dict[str, tuple[str, float]] = {}  # stage id -> (label, start time)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        if title:
            self._print(title)

    # -- estimates -------------------------------------------------------------------------
    def elapsed(self) -> float:
        return time.monotonic() - self.start

    def remaining(self) -> float | None:
        """Estimated seconds left, or None before any stage has been timed."""
        if self.done_weight <= 0 or self.done_seconds <= 0:  # nothing timed yet (0.0 s: rounded away)
            return None
        rate = self.done_seconds / self.done_weight  # seconds per weight unit
        left = sum(w for sid, w in self.weights.items() if sid not in self.finished)
        for sid, (_, t0) in list(self._running.items()):  # work already done on running stages
            left -= min(time.monotonic() - t0, self.weights.get(sid, 0.0) * rate) / rate
        return max(left, 0.0) * rate

    def position(self, stage_id: str) -> str:
        ids = list(self.weights)
        n = len(ids)
        i = ids.index(stage_id) + 1 if stage_id in ids else 0
        return f"[{i:>{len(str(n))}}/{n}]"

    def _line(self, stage_id: str, label: str, status: str) -> str:
        return (f"{self.name}{self.position(stage_id)} {stage_id:<34} {label:<44} {status:<8} "
                f"elapsed {format_seconds(self.elapsed())}  remaining ~{format_seconds(self.remaining())}")

    def _print(self, text: str, inplace: bool = False) -> None:
        if inplace and self.tty:
            self.stream.write("\r" + text[:160].ljust(160))
        else:
            if self.tty:
                self.stream.write("\r")
            self.stream.write(text + "\n")
        self.stream.flush()

    # -- events ----------------------------------------------------------------------------
    def stage_started(self, stage_id: str, label: str) -> None:
        self._running[stage_id] = (label, time.monotonic())
        self._print(self._line(stage_id, label, "started"))
        if self.heartbeat > 0 and self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(target=self._beat, daemon=True)
            self._thread.start()

    def _beat(self) -> None:
        while not self._stop.wait(self.heartbeat):
            now = time.monotonic()
            busy = ", ".join(f"{sid} {format_seconds(now - t0)}" for sid, (_, t0) in list(self._running.items()))
            if busy:
                self._print(f"  {self.name}running: {busy} | elapsed {format_seconds(self.elapsed())}  "
                            f"remaining ~{format_seconds(self.remaining())}", inplace=True)

    def _stop_beat(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2)
            self._thread = None

    def stage_finished(self, stage_id: str, label: str, seconds: float, status: str = "done") -> None:
        """Record a finished stage; ``status='skipped'`` does not count towards the rate."""
        self._running.pop(stage_id, None)
        if not self._running:
            self._stop_beat()
        self.finished.add(stage_id)
        if status == "done":
            self.done_weight += self.weights.get(stage_id, 0.0)
            self.done_seconds += seconds
        shown = status if status != "done" else f"done {format_seconds(seconds)}"
        self._print(self._line(stage_id, label, shown))

    def message(self, text: str) -> None:
        self._print(text)
