"""Lightning callbacks and loggers that carry over the crumpets Trainer's hooks, snapshots and logs."""

from __future__ import annotations

from typing import TYPE_CHECKING

from crumpets_lightning._lazy import lazy_getattr

if TYPE_CHECKING:  # what type checkers see; at run time each name is imported on first use (__getattr__)
    from crumpets_lightning.callbacks.data_wait import DataWaitMonitor
    from crumpets_lightning.callbacks.hooks import (
        HOOK_EVENTS,
        CrumpetsHooks,
    )
    from crumpets_lightning.callbacks.json_logger import JSONLogger
    from crumpets_lightning.callbacks.snapshot import (
        Snapshot,
        load_snapshot,
    )

_NAMES = {
    "CrumpetsHooks": "hooks",
    "Snapshot": "snapshot",
    "load_snapshot": "snapshot",
    "HOOK_EVENTS": "hooks",
    "JSONLogger": "json_logger",
    "DataWaitMonitor": "data_wait",
}

__all__ = [  # a literal list (the keys of _NAMES, tested), so type checkers know what is exported
    "HOOK_EVENTS",
    "CrumpetsHooks",
    "DataWaitMonitor",
    "JSONLogger",
    "Snapshot",
    "load_snapshot",
]
if not TYPE_CHECKING:  # type checkers see only the names imported above, so a typo is an error
    __getattr__ = lazy_getattr(__name__, _NAMES)


def __dir__() -> list[str]:
    return __all__
