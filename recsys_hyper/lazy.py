"""Packages whose names load on first use: ``import recsys_hyper`` and the command line's
``--help`` import no model code, and a command imports MLflow only when it tracks."""

from __future__ import annotations

import importlib


def lazy_exports(package: str, exports: dict[str, tuple[str, ...]], namespace: dict):
    """For a package's ``__init__``: ``exports`` maps each submodule to the names it provides.
    Returns ``(names, __getattr__)``: every exported name, and the module ``__getattr__`` that
    imports a name's submodule when the name (or the submodule itself) is first used, then keeps
    it in ``namespace`` (the package's globals)."""
    where = {name: module for module, names in exports.items() for name in names}

    def __getattr__(name: str):
        if name in exports:                                    # the submodule itself
            return importlib.import_module(f".{name}", package)
        if name in where:
            value = getattr(importlib.import_module(f".{where[name]}", package), name)
            namespace[name] = value
            return value
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    return list(where), __getattr__
