"""Graceful stop: SIGTERM or SIGINT (Slurm's time limit, `kill`, Ctrl-C) asks a job to stop at its
next safe point; a second signal stops it at once."""

from __future__ import annotations

import signal


class GracefulStop:
    """SIGTERM / SIGINT: remember the signal (the trainer stops at its next safe point); a second
    one stops at once (the default action)."""

    def __init__(self):
        self.signal: int | None = None
        self._previous = {}

    def __enter__(self):
        for sig in (signal.SIGTERM, signal.SIGINT):
            self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame):
        if self.signal is not None:  # asked twice: stop now
            signal.signal(signum, signal.SIG_DFL)
            signal.raise_signal(signum)
        self.signal = signum

    def __exit__(self, *exc):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
