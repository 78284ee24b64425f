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
    """numpy scalars -> Python scalars, so messages read ``4.5`` and not ``np.float32(4.5)``."""
    item = getattr(value, "item", None)
    if callable(item):
        try:
            return item()
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


class NotFittedError(RecsysHyperError, AttributeError):
    """A model was used before ``fit`` or ``load``."""
