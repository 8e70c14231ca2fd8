"""What `mura evaluate` tells the organiser on stderr while it works.

A line per stage (staged, running with its limits, ran, collected, scored, recorded), and on a
terminal a live line while the submission runs: the elapsed time against the limit and the last
line of the submission's log, redrawn every LIVE_INTERVAL seconds by a timer thread. The log's
line is a participant's bytes: every character that is not printable (terminal escapes,
controls) is shown as `?` (LogCapture.last_line), so nothing of it can act on the terminal.
Quiet: no stage lines and no live line; warnings are still said.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Iterator
from typing import TextIO

from scorer.harness.sandbox import Limits, LogCapture, Watch

PREFIX = "mura evaluate: "
LIVE_INTERVAL = 1.0  # seconds between two redraws of the live line
CLEAR_LINE = "\r\x1b[K"  # back to the line's start and erase it (the live line's own escape)


class Progress:
    def __init__(self, stream: TextIO | None, quiet: bool = False, live: bool | None = None) -> None:
        """`stream` None: say nothing. `live` None: a live line when `stream` is a terminal."""
        self.stream = stream
        self.quiet = quiet
        if live is None:
            live = stream is not None and hasattr(stream, "isatty") and stream.isatty()
        self.live = live and not quiet and stream is not None
        self._lock = threading.Lock()
        self._drawn = False  # the live line is on the terminal

    def stage(self, text: str) -> None:
        if not self.quiet:
            self._write(f"{PREFIX}{text}\n")

    def warn(self, text: str) -> None:
        self._write(f"{PREFIX}WARNING: {text}\n")

    @contextlib.contextmanager
    def running(self, limits: Limits) -> Iterator[Watch]:
        """While the submission runs: yields the runner's `watch` (it hands over the LogCapture);
        on a terminal, redraws the live line until the run is over, then erases it."""
        captures: list[LogCapture] = []
        if not self.live:
            yield captures.append
            return
        done = threading.Event()
        start = time.monotonic()

        def redraw() -> None:
            while not done.wait(LIVE_INTERVAL):
                last = captures[0].last_line() if captures else ""
                text = f"running: {time.monotonic() - start:.0f} s of {limits.timeout:g} s"
                self._draw(f"{text} | {last}" if last else text)

        thread = threading.Thread(target=redraw, name="live-progress", daemon=True)
        thread.start()
        try:
            yield captures.append
        finally:
            done.set()
            thread.join()
            self._write("")

    def _draw(self, text: str) -> None:
        width = _width(self.stream) - 1
        with self._lock:
            self.stream.write(CLEAR_LINE + text[:width])
            self.stream.flush()
            self._drawn = True

    def _write(self, text: str) -> None:
        if self.stream is None:
            return
        with self._lock:
            if self._drawn:
                self.stream.write(CLEAR_LINE)
                self._drawn = False
            self.stream.write(text)
            self.stream.flush()


def _width(stream: TextIO) -> int:
    try:
        columns = os.get_terminal_size(stream.fileno()).columns
    except (OSError, AttributeError, ValueError):
        columns = 0
    return columns if columns > 0 else 80  # a pseudo-terminal may say 0
