"""Progress on long work, one way everywhere: a bar on a terminal (a widget in a notebook), a log
line every ``RECSYS_HYPER_PROGRESS_EVERY`` seconds (default 30) otherwise (a nightly's log, a CI
job), so that no long step is silent wherever it runs.

>>> with progress(total=45, desc="calibration", unit="candidate") as bar:   # doctest: +SKIP
...     for c in candidates:
...         measure(c)
...         bar.update()

Work that ends within the first seconds shows nothing either way (``delay``). ``enabled=False``
(``--no-progress``) silences both.
"""

from __future__ import annotations

import logging
import os
import sys
import time

log = logging.getLogger("recsys_hyper.progress")

#: seconds between two log lines when the output is not a terminal
EVERY_S_ENV = "RECSYS_HYPER_PROGRESS_EVERY"
#: seconds before a bar or the first log line appears (short work stays quiet)
DELAY_S = 2.0


_on = True


def enabled() -> bool:
    """Whether progress is reported in this process (see :func:`set_enabled`)."""
    return _on


def set_enabled(on: bool) -> None:
    """Switch every progress report of this process on or off (the command line's ``--no-progress``)."""
    global _on
    _on = bool(on)


def progress(iterable=None, *, total: int | None = None, desc: str = "", unit: str = "it", enabled: bool = True,
             leave: bool = True, unit_scale: bool = False, delay: float | None = None):
    """A progress tracker with tqdm's interface (``update``, ``set_postfix``, ``set_postfix_str``,
    ``close``, iteration, context manager): tqdm on a terminal, periodic log lines otherwise."""
    enabled = enabled and _on
    delay = DELAY_S if delay is None else delay
    if total is None and iterable is not None and hasattr(iterable, "__len__"):
        total = len(iterable)
    if enabled and (sys.stderr.isatty() or _in_notebook()):
        from tqdm.auto import tqdm

        return tqdm(iterable, total=total, desc=desc, unit=unit, leave=leave, unit_scale=unit_scale, delay=delay)
    return LogLines(iterable, total=total, desc=desc, unit=unit, enabled=enabled, delay=delay)


class LogLines:
    """tqdm's interface, writing ``desc: n/total units (p%), elapsed, ~left [postfix]`` as an
    INFO log line every ``RECSYS_HYPER_PROGRESS_EVERY`` seconds (from a timer, so a long single
    step is reported too), and a closing line when it has written any."""

    def __init__(self, iterable=None, total: int | None = None, desc: str = "", unit: str = "it",
                 enabled: bool = True, delay: float | None = None):
        import threading

        delay = DELAY_S if delay is None else delay

        self.iterable, self.total, self.desc, self.unit, self.enabled = iterable, total, desc, unit, enabled
        self.n, self.postfix, self.lines = 0, "", 0
        self.start = time.monotonic()
        self._stop = threading.Event()
        if enabled:
            import weakref

            every = _every_s()
            # the timer holds the tracker weakly: one its caller dropped without closing (an
            # exception went through) is collected, and the timer ends with it
            self._timer = threading.Thread(target=_tick, args=(weakref.ref(self), self._stop, max(delay, every), every),
                                           daemon=True, name=f"progress {desc}")
            self._timer.start()

    def __iter__(self):
        for item in self.iterable:
            yield item
            self.update()

    def __enter__(self) -> "LogLines":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def update(self, n: int = 1) -> None:
        self.n += n

    def set_postfix(self, ordered_dict=None, refresh: bool = True, **kwargs) -> None:
        items = {**(ordered_dict or {}), **kwargs}
        self.postfix = ", ".join(f"{k}={v}" for k, v in items.items())

    def set_postfix_str(self, s: str = "", refresh: bool = True) -> None:
        self.postfix = s

    def refresh(self) -> None:
        pass

    def close(self) -> None:
        if not self.enabled:
            return
        self.enabled = False
        self._stop.set()
        self._timer.join()
        if self.lines:
            log.info("%s: done, %s %s in %s", self.desc, f"{self.n:,}", _plural(self.unit),
                     _duration(time.monotonic() - self.start))

    def __del__(self) -> None:
        self._stop.set()

    def _line(self, now: float) -> None:
        elapsed = now - self.start
        done = f"{self.n:,}" + (f"/{self.total:,}" if self.total else "")
        share = f" ({100 * self.n / self.total:.0f}%)" if self.total else ""
        left = ""
        if self.total and self.n:
            left = f", ~{_duration(elapsed * (self.total - self.n) / self.n)} left"
        log.info("%s: %s %s%s, %s elapsed%s%s", self.desc, done, _plural(self.unit), share, _duration(elapsed), left,
                 f" [{self.postfix}]" if self.postfix else "")
        self.lines += 1


def _in_notebook() -> bool:
    """Whether this process is a Jupyter kernel (its cells show tqdm's widget)."""
    ipython = sys.modules.get("IPython")
    shell = ipython.get_ipython() if ipython is not None and hasattr(ipython, "get_ipython") else None
    return type(shell).__name__ == "ZMQInteractiveShell"


def _tick(tracker, stop, first: float, every: float) -> None:
    wait = first
    while not stop.wait(wait):
        alive = tracker()
        if alive is None:
            return
        alive._line(time.monotonic())
        del alive
        wait = every


def _plural(unit: str) -> str:
    return unit if unit.endswith("s") else unit + "s"


def _every_s() -> float:
    try:
        value = float(os.environ.get(EVERY_S_ENV, "30"))
    except ValueError:
        return 30.0
    return value if value > 0 else 30.0


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"
