"""Lazy attribute access for the subpackages' public names (keeps ``import crumpets_lightning.data`` light)."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any


class NoPortError(ImportError):
    """A crumpets name that has no direct port; the message names what replaces it."""


def lazy_getattr(
    package: str, names: Mapping[str, str], no_port: Mapping[str, str] | None = None
) -> Callable[[str], Any]:
    """Return a module ``__getattr__`` that imports ``names[attr]`` (a submodule of ``package``) on first use.

    Args:
        package: the package's ``__name__``.
        names: public name -> submodule (relative to ``package``) that defines it.
        no_port: crumpets names without a direct port -> one sentence naming the replacement. Asking for one
            raises :class:`NoPortError` (an ``ImportError``, so ``from package import Name`` shows the sentence).

    Returns:
        The ``__getattr__`` function for the package module.
    """
    no_port = no_port or {}

    def __getattr__(attr: str) -> Any:
        module_name = names.get(attr)
        if module_name is None:
            if attr in no_port:
                raise NoPortError(f"{attr} (crumpets) has no direct port in {package}: {no_port[attr]}", name=package)
            raise AttributeError(f"module {package!r} has no attribute {attr!r}")
        module = importlib.import_module(f"{package}.{module_name}")
        return getattr(module, attr)

    return __getattr__
