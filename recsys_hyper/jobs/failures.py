"""The one top-level boundary for failures that are not bugs: what the command line prints when
the operating system, the memory or the tracking store says no.

Every command runs inside it (see :func:`recsys_hyper.cli.main`): an OS error (a full disk, a
read-only file system, no permission), running out of memory, or a tracking store that fails in
the middle of work becomes one line naming what failed, where, and the fix, and exit status 2.
The writers of this package leave nothing half-written when they fail (temporaries are removed
as the error passes); tracked runs end as FAILED, or KILLED after a signal; locks are released.
"""

from __future__ import annotations

import sys

from ..errors import describe_os_error


def describe_failure(exc: BaseException) -> str | None:
    """One line for ``exc``, or ``None`` when it is not an environmental failure (a bug: let it show)."""
    if "mlflow" in sys.modules:                    # tracking errors first: they often wrap OS errors
        from ..tracking import describe_store_error

        text = describe_store_error(exc)
        if text is not None:
            return text
    if isinstance(exc, OSError):
        return describe_os_error(exc)
    if isinstance(exc, MemoryError):
        return ("out of memory: the machine could not hold this work; lower the work's size (e.g. --chunk-users, "
                "--max-eval-users, a smaller --config) or run it on a machine with more memory")
    return None
