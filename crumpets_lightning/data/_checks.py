"""Argument checks shared by the loader and the DataModule: one message style, one place.

Every message names the argument, what it got (with its type when the type is wrong) and what it accepts.
"""

from __future__ import annotations

import math
import os
from typing import Any

import numpy as np

__all__ = ["check_bool", "check_int", "check_seconds", "default_nworkers"]


def default_nworkers(local_ranks: int = 1) -> int:
    """The usable CPUs of this process shared among ``local_ranks`` processes (at least 1)."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, cpus // max(1, local_ranks))


def check_int(name: str, value: Any, minimum: int, maximum: int | None = None, accepts: str | None = None) -> int:
    """``value`` as an int in ``[minimum, maximum)``, or an error naming ``name``, the value and ``accepts``.

    Raises:
        TypeError: not an int.
        ValueError: out of range.
    """
    if accepts is None:
        accepts = f"an int >= {minimum}" if maximum is None else f"an int in [{minimum}, {maximum})"
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"Expected `{name}` to be {accepts} but got {value!r} ({type(value).__name__})")
    if value < minimum or (maximum is not None and value >= maximum):
        raise ValueError(f"Expected `{name}` to be {accepts} but got {value!r}")
    return int(value)


def check_bool(name: str, value: Any) -> bool:
    """``value`` as a bool, or a TypeError naming ``name``."""
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"Expected `{name}` to be a bool (true or false) but got {value!r} ({type(value).__name__})")
    return bool(value)


def check_seconds(name: str, value: Any, example: str = "") -> float:
    """``value`` as a positive, finite number of seconds, or an error naming ``name``.

    Raises:
        TypeError: not a number.
        ValueError: zero, negative, infinite or NaN.
    """
    accepts = f"a positive number of seconds{example}"
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"Expected `{name}` to be {accepts} but got {value!r} ({type(value).__name__})")
    if not 0 < value < math.inf:  # also rejects NaN
        raise ValueError(f"Expected `{name}` to be {accepts} but got {value!r}")
    return float(value)
