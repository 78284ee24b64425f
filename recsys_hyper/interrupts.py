"""Stopping on a signal at a safe point.

The command line turns SIGTERM and SIGINT into :class:`~recsys_hyper.errors.Interrupted`, raised in
the main thread, so that every ``with`` block unwinds: temporaries are removed, tracked runs end as
KILLED, locks are released. A few operations must not be cut in the middle (a write to the tracking
store: the store's driver would report the cut as a database error); they run inside
:func:`deferred`, and a signal that arrives meanwhile is raised as soon as they are done.
"""

from __future__ import annotations

import contextlib
import functools
import signal

from .errors import Interrupted

_pending: int | None = None
_depth = 0


def on_signal(signum, frame) -> None:
    """The signal handler: raise :class:`Interrupted` now, or when the deferred operation ends."""
    global _pending
    if _depth:
        _pending = signum
        return
    raise Interrupted(signum)


@contextlib.contextmanager
def deferred():
    """Run the block whole: a signal that arrives inside it is raised when it ends."""
    global _depth, _pending
    _depth += 1
    try:
        yield
    finally:
        _depth -= 1
    if _depth == 0 and _pending is not None:
        signum, _pending = _pending, None
        raise Interrupted(signum)


def whole(fn):
    """``fn`` run inside :func:`deferred` (a decorator)."""
    @functools.wraps(fn)
    def run(*args, **kwargs):
        with deferred():
            return fn(*args, **kwargs)
    return run


@contextlib.contextmanager
def stop_on_signals(signals=(signal.SIGTERM, signal.SIGINT)):
    """Within the block, ``signals`` raise :class:`Interrupted` (in the main thread; elsewhere, e.g.
    an application embedding the library, nothing is changed)."""
    try:
        previous = {s: signal.signal(s, on_signal) for s in signals}
    except ValueError:                    # not the main thread
        yield
        return
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
