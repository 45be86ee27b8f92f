"""Lightning callbacks and loggers that carry over the crumpets Trainer's hooks, snapshots and logs."""

from __future__ import annotations

from crumpets_lightning._lazy import lazy_getattr

_NAMES = {
    "CrumpetsHooks": "hooks",
    "Snapshot": "snapshot",
    "load_snapshot": "snapshot",
    "HOOK_EVENTS": "hooks",
    "JSONLogger": "json_logger",
    "DataWaitMonitor": "data_wait",
}

__all__ = sorted(_NAMES)
__getattr__ = lazy_getattr(__name__, _NAMES)


def __dir__() -> list[str]:
    return __all__
