"""Exceptions raised by recsys-hyper.

Every error a user can cause says *what* is wrong, *where* (file, column, rows), shows a few
examples and says how to fix it. The CLI prints the message and exits with status 2.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

MAX_EXAMPLES = 5


class RecsysHyperError(Exception):
    """Base class for errors caused by input or configuration (not by bugs)."""


@dataclass(frozen=True)
class Problem:
    """One problem found in one file.

    Attributes mirror the message: ``file``: the file's name; ``column``: the column or
    ``None`` for file-level problems; ``what``: the problem; ``n_rows``: how many rows are
    affected (``None`` when not row-level); ``rows`` / ``examples``: up to five row numbers
    (0-based, as in the file) and offending values; ``fix``: what to do about it.
    """

    file: str
    column: str | None
    what: str
    fix: str
    n_rows: int | None = None
    rows: Sequence[int] = field(default_factory=tuple)
    examples: Sequence[object] = field(default_factory=tuple)

    def __str__(self) -> str:
        where = self.file if self.column is None else f"{self.file}: column '{self.column}'"
        parts = [f"{where}: {self.what}"]
        details = []
        if self.rows:
            shown = ", ".join(str(r) for r in list(self.rows)[:MAX_EXAMPLES])
            more = ", ..." if self.n_rows is not None and self.n_rows > len(self.rows) else ""
            details.append(f"rows {shown}{more}")
        if self.examples:
            shown = ", ".join(repr(_plain(v)) for v in list(self.examples)[:MAX_EXAMPLES])
            details.append(f"e.g. {shown}")
        if details:
            parts[0] += " (" + "; ".join(details) + ")"
        return f"{parts[0]}; {self.fix}"


def _plain(value: object) -> object:
    """numpy scalars -> Python scalars, so messages read ``4.5`` and not ``np.float32(4.5)`` (a
    float32 by its own shortest digits: ``1e+30``, not ``1.0000000150474662e+30``)."""
    item = getattr(value, "item", None)
    if callable(item):
        try:
            plain = item()
            return float(str(value)) if isinstance(plain, float) and getattr(value, "itemsize", 8) < 8 else plain
        except (TypeError, ValueError):
            return value
    return value


class DataValidationError(RecsysHyperError, ValueError):
    """The input data breaks the data contract. ``problems`` lists every problem found."""

    def __init__(self, problems: Sequence[Problem]):
        self.problems = list(problems)
        if len(self.problems) == 1:
            message = str(self.problems[0])
        else:
            message = f"{len(self.problems)} problems in the input data:\n" + "\n".join(
                f"  - {p}" for p in self.problems
            )
        super().__init__(message)


class ParameterError(RecsysHyperError, ValueError):
    """A call's parameter outside what it accepts (``k = 0``, ``n = -3``)."""


def check_count(value, name: str, method: str, at_most: int | None = None) -> int:
    """``value`` as a whole number >= 1 (and <= ``at_most``, the catalogue's size), or a clear
    :class:`ParameterError` naming the parameter and the method."""
    import numbers

    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ParameterError(f"The '{name}' parameter of {method} must be a whole number >= 1. Got {value!r} instead.")
    if at_most is not None and value > at_most:
        raise ParameterError(f"The '{name}' parameter of {method} must be at most the catalogue's {at_most:,} items. "
                             f"Got {value!r} instead.")
    return int(value)


class NotFittedError(RecsysHyperError, AttributeError):
    """A model was used before ``fit`` or ``load``."""


class NonFiniteError(RecsysHyperError, ArithmeticError):
    """A score, prediction or figure came out NaN or infinite: it is refused where it would leave
    (an output file, a registered model, the nightly's gate), never written or acted on."""


def non_finite_users(user_ids, bad_rows, what: str) -> NonFiniteError:
    """The error for ``what`` (e.g. "scores") that came out non-finite for the users of ``bad_rows``."""
    import numpy as np

    bad_rows = np.asarray(bad_rows)
    shown = ", ".join(repr(_plain(u)) for u in np.asarray(user_ids)[bad_rows[:MAX_EXAMPLES]])
    return NonFiniteError(f"the model's {what} came out NaN or infinite for {len(bad_rows):,} users (e.g. {shown}); "
                          f"nothing was written. The model or these users' inputs are broken: check their features "
                          f"and events, or serve another model version")


class Interrupted(KeyboardInterrupt):
    """The process was asked to stop by a signal (SIGINT, SIGTERM). Raised in the main thread by
    the command line's signal handler, so that every ``with`` block unwinds: temporaries are
    removed, tracked runs end as KILLED, locks are released. ``signum``: the signal's number."""

    def __init__(self, signum: int):
        import signal

        self.signum = int(signum)
        super().__init__(signal.Signals(self.signum).name)


def annotate(exc: OSError, path) -> OSError:
    """Name ``path`` on an OS error that names no file (pyarrow's and torch's writers do not)."""
    if getattr(exc, "filename", None) is None:
        try:
            exc.filename = str(path)
        except (AttributeError, TypeError):
            pass
    return exc


def describe_os_error(exc: OSError) -> str:
    """One line for an OS error: what happened, to which file, and the fix. Nothing half-written is
    left behind by this package's writers (temporaries are removed as the error passes)."""
    import errno as E

    where = f" ({exc.filename})" if getattr(exc, "filename", None) else ""
    code = getattr(exc, "errno", None)
    kept = "; nothing half-written was left behind"
    if code == E.ENOSPC or code == getattr(E, "EDQUOT", -1):
        what = "no space left on the device" if code == E.ENOSPC else "disk quota exceeded"
        return f"{what}{where}: free some space or write to another location, then run the command again{kept}"
    if code == E.EROFS:
        return f"read-only file system{where}: write to a writable location (another --out or --work){kept}"
    if code in (E.EACCES, E.EPERM):
        return f"permission denied{where}: write to a location you may write to, or fix its permissions{kept}"
    if code == E.ENOENT:
        return f"no such file or directory{where}: check the path"
    if code in (E.ENOTDIR, E.EISDIR):
        return f"{exc.strerror or 'not a file / directory'}{where}: check the path"
    if code == E.EMFILE or code == E.ENFILE:
        return f"too many open files{where}: raise the limit (ulimit -n) and run the command again"
    if code == E.EIO:
        return f"input/output error{where}: the device failed; check it, then run the command again{kept}"
    text = exc.strerror or str(exc)
    return f"{text}{where}"
