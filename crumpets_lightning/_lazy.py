"""Lazy attribute access for the subpackages' public names (keeps ``import crumpets_lightning.data`` light)."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any


def lazy_getattr(package: str, names: Mapping[str, str]) -> Callable[[str], Any]:
    """Return a module ``__getattr__`` that imports ``names[attr]`` (a submodule of ``package``) on first use."""

    def __getattr__(attr: str) -> Any:
        module_name = names.get(attr)
        if module_name is None:
            raise AttributeError(f"module {package!r} has no attribute {attr!r}")
        module = importlib.import_module(f"{package}.{module_name}")
        return getattr(module, attr)

    return __getattr__
