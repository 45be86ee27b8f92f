"""Exceptions raised by the data pipeline.

Every error a user can cause names the offending sample (its ``key`` when it has one, else its index in the
source) and, for failures inside a worker process, carries that worker's formatted traceback.
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["ConfigurationError", "CrumpetsDataError", "SampleError", "WorkerDiedError", "WorkerError"]


class CrumpetsDataError(RuntimeError):
    """Base class of every error raised by ``crumpets_lightning.data``."""


class ConfigurationError(CrumpetsDataError, ValueError):
    """Settings that cannot work together, found when a run starts (e.g. in ``CrumpetsDataModule.setup``).

    The message names the settings and how to fix them; the console script prints it as one line.
    """


class SampleError(CrumpetsDataError, ValueError):
    """A sample cannot be used: corrupt image bytes, a missing or mistyped field, a hostile payload.

    Args:
        message: what is wrong and what to do about it.
        key: the sample's ``key`` field, or its index in the source when it has none.
    """

    def __init__(self, message: str, key: object = None) -> None:
        self.key = key
        text = message if key is None else f"sample {key!r}: {message}"
        super().__init__(text)
        self.message = message

    def __reduce__(self) -> tuple[type, tuple[str, object]]:
        return type(self), (self.message, self.key)


class WorkerError(CrumpetsDataError):
    """An exception was raised inside a worker process while it prepared a sample.

    Args:
        message: the original exception as ``"TypeName: text"``.
        key: the sample's ``key`` (or index) that was being processed, when known.
        worker_traceback: the formatted traceback from the worker process.
        exc_type: the name of the original exception type.
    """

    def __init__(
        self,
        message: str,
        key: object = None,
        worker_traceback: str = "",
        exc_type: str = "",
    ) -> None:
        self.key = key
        self.worker_traceback = worker_traceback
        self.exc_type = exc_type
        self.message = message
        where = "in a worker process" if key is None else f"in a worker process while preparing sample {key!r}"
        text = f"{message} (raised {where})"
        if worker_traceback:
            text += "\n\nWorker traceback (most recent call last):\n" + worker_traceback.rstrip()
        super().__init__(text)

    def __reduce__(self) -> tuple[type, tuple[str, object, str, str]]:
        return type(self), (self.message, self.key, self.worker_traceback, self.exc_type)


class WorkerDiedError(CrumpetsDataError):
    """A worker process ended without being asked to (killed by a signal, out of memory, ``os._exit``).

    Args:
        message: which worker, how it ended, the samples it held and what to do.
        keys: the keys (the source's ``sample_key``, else the index) of the samples the worker held when it
            died: one of them may be the sample that killed it.
    """

    def __init__(self, message: str, keys: Sequence[object] = ()) -> None:
        super().__init__(message)
        self.message = message
        self.keys = list(keys)

    def __reduce__(self) -> tuple[type, tuple[str, list[object]]]:
        return type(self), (self.message, self.keys)
