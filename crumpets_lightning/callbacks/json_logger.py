"""A Lightning logger that writes crumpets-style JSON lines: one JSON object per logging call."""

from __future__ import annotations

import json
import math
import os
from argparse import Namespace
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import IO, Any

import torch
from lightning.pytorch.loggers.logger import Logger
from lightning.pytorch.utilities import rank_zero_only
from typing_extensions import override

__all__ = ["JSONLogger"]

_FILE_NAME = "metrics.jsonl"


def _now() -> str:
    return datetime.now().astimezone().isoformat(timespec="milliseconds")


def _plain_number(value: float) -> float | None:
    # JSON has no NaN or infinity; strict readers (jq, browsers) reject Python's extensions.
    return value if math.isfinite(value) else None


def _to_json(value: Any) -> Any:
    """Turn ``value`` into something ``json.dumps`` writes in strict JSON (no NaN, no objects)."""
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return _plain_number(value)
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu()
        if value.numel() == 1:
            return _to_json(value.item())
        return [_to_json(v) for v in value.tolist()]
    if isinstance(value, Namespace):
        value = vars(value)
    if isinstance(value, Mapping):
        return {str(k): _to_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [_to_json(v) for v in value]
    item = getattr(value, "item", None)  # numpy scalars and 0-d arrays
    if callable(item) and getattr(value, "size", None) == 1:
        return _to_json(item())
    tolist = getattr(value, "tolist", None)
    if callable(tolist):
        return _to_json(tolist())
    return repr(value)


class JSONLogger(Logger):
    """Writes every ``log_metrics`` call as one JSON object per line, like the crumpets ``JSONLogger``.

    The file is ``<save_dir>/<name>/version_<n>/metrics.jsonl``. Each metrics record reads
    ``{"time": "<ISO 8601>", "epoch": ..., "step": ..., "<metric>": <value>, ...}``; hyperparameters are written
    as ``{"time": ..., "hyperparameters": {...}}`` (Lightning logs them before the first metrics). Values are
    plain JSON: tensors become numbers or lists, NaN and infinities become ``null``, objects their ``repr``.
    Every line is flushed at once, so the file can be followed while training runs (``tail -f``). Only the
    rank-zero process writes.

    Args:
        save_dir: Root directory of the logs.
        name: Experiment name: the folder below ``save_dir``.
        version: Run version. ``None`` takes the next free ``version_<n>``; an int ``n`` means ``version_<n>``;
            a string is used as the folder name as it is.

    Example::

        from lightning import Trainer
        from crumpets_lightning.callbacks.json_logger import JSONLogger

        trainer = Trainer(logger=JSONLogger("logs", name="resnet"))
        # ... trainer.fit(...) writes logs/resnet/version_0/metrics.jsonl
    """

    def __init__(
        self, save_dir: str | os.PathLike[str], name: str = "lightning_logs", version: int | str | None = None
    ):
        super().__init__()
        if not name:
            raise ValueError("Expected argument `name` to be a non-empty folder name but got an empty string.")
        if isinstance(version, int) and version < 0:
            raise ValueError(
                f"Expected argument `version` to be a non-negative int, a folder name or None but got {version}."
            )
        self._save_dir = os.fspath(save_dir)
        self._name = name
        self._version = version
        self._file: IO[str] | None = None

    @property
    @override
    def name(self) -> str:
        """The experiment name: the folder below :attr:`save_dir`."""
        return self._name

    @property
    @override
    def version(self) -> int | str:
        """The run version; the next free ``version_<n>`` number when none was given."""
        if self._version is None:
            self._version = self._next_version()
        return self._version

    @property
    @override
    def save_dir(self) -> str:
        """The root directory of the logs."""
        return self._save_dir

    @property
    @override
    def root_dir(self) -> str:
        """``<save_dir>/<name>``: the folder holding every version of this experiment."""
        return os.path.join(self._save_dir, self._name)

    @property
    @override
    def log_dir(self) -> str:
        """``<save_dir>/<name>/version_<n>`` (or the string version as given)."""
        version = self.version if isinstance(self.version, str) else f"version_{self.version}"
        return os.path.join(self.root_dir, version)

    @property
    def path(self) -> str:
        """The JSON-lines file this logger writes."""
        return os.path.join(self.log_dir, _FILE_NAME)

    @override
    @rank_zero_only
    def log_hyperparams(self, params: dict[str, Any] | Namespace, *args: Any, **kwargs: Any) -> None:
        """Write the hyperparameters as one ``{"time": ..., "hyperparameters": {...}}`` record.

        Args:
            params: The hyperparameters, a dict or an ``argparse.Namespace``.
            *args: Ignored (Lightning's signature).
            **kwargs: Ignored (Lightning's signature).
        """
        self._write({"time": _now(), "hyperparameters": _to_json(params)})

    @override
    @rank_zero_only
    def log_metrics(self, metrics: Mapping[str, Any], step: int | None = None) -> None:
        """Write one ``{"time", "epoch", "step", metrics...}`` record.

        Args:
            metrics: Metric names and values (numbers or tensors); Lightning adds ``epoch``.
            step: The global step the metrics belong to.
        """
        values = dict(metrics)
        record: dict[str, Any] = {"time": _now(), "epoch": _to_json(values.pop("epoch", None)), "step": step}
        for key, value in values.items():
            record[str(key)] = _to_json(value)
        self._write(record)

    @override
    @rank_zero_only
    def save(self) -> None:
        """Flush the file (every record is flushed already; kept for Lightning's logger protocol)."""
        if self._file is not None:
            self._file.flush()

    @override
    @rank_zero_only
    def finalize(self, status: str) -> None:
        """Close the file; a later record reopens it in append mode.

        Args:
            status: How the run ended (``"success"``, ``"failed"``, ...); not written.
        """
        if self._file is not None:
            self._file.close()
            self._file = None

    def _write(self, record: dict[str, Any]) -> None:
        if self._file is None:
            Path(self.log_dir).mkdir(parents=True, exist_ok=True)
            self._file = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 - kept open across calls
        self._file.write(json.dumps(record, allow_nan=False) + "\n")
        self._file.flush()

    def _next_version(self) -> int:
        root = Path(self.root_dir)
        if not root.is_dir():
            return 0
        versions = [
            int(entry.name[len("version_") :])
            for entry in root.iterdir()
            if entry.is_dir() and entry.name.startswith("version_") and entry.name[len("version_") :].isdigit()
        ]
        return max(versions) + 1 if versions else 0

    def __getstate__(self) -> dict[str, Any]:
        # An open file cannot be pickled (ddp_spawn pickles the trainer's loggers); the copy reopens lazily.
        state = self.__dict__.copy()
        state["_file"] = None
        return state
