"""Crumpets snapshots (``epoch_%02d`` files every few epochs) on top of Lightning's ``ModelCheckpoint``.

Checkpoints written while a :class:`Snapshot` is attached also carry the random number generator states of
Python, NumPy and torch (and CUDA), restored when training resumes from them. Everything is stored as tensors
and plain Python types, so every checkpoint loads with ``torch.load(path, weights_only=True)``.
"""

from __future__ import annotations

import os
import random
from collections.abc import Mapping
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.utilities import rank_zero_warn
from typing_extensions import override

__all__ = ["RNG_STATES_KEY", "Snapshot", "load_snapshot"]

RNG_STATES_KEY = "crumpets_rng_states"
"""Checkpoint key of the list of RNG states, one entry per process (global rank)."""


def _collect_rng_state() -> dict[str, Any]:
    """This process's RNG states as tensors and plain types (safe for ``weights_only`` loading)."""
    version, python_state, gauss_next = random.getstate()
    numpy_state = np.random.get_state(legacy=False)
    state: dict[str, Any] = {
        "python": {
            "version": int(version),
            "state": torch.tensor(python_state, dtype=torch.int64),
            "gauss_next": None if gauss_next is None else float(gauss_next),
        },
        "numpy": {
            "bit_generator": str(numpy_state["bit_generator"]),
            "key": torch.from_numpy(np.asarray(numpy_state["state"]["key"], dtype=np.int64).copy()),
            "pos": int(numpy_state["state"]["pos"]),
            "has_gauss": int(numpy_state["has_gauss"]),
            "gauss": float(numpy_state["gauss"]),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _restore_rng_state(state: Mapping[str, Any]) -> None:
    """Set this process's RNG states from a dict made by :func:`_collect_rng_state`."""
    python = state["python"]
    random.setstate((python["version"], tuple(int(v) for v in python["state"].tolist()), python["gauss_next"]))
    numpy = state["numpy"]
    np.random.set_state(
        {
            "bit_generator": numpy["bit_generator"],
            "state": {"key": numpy["key"].numpy().astype(np.uint32), "pos": numpy["pos"]},
            "has_gauss": numpy["has_gauss"],
            "gauss": numpy["gauss"],
        }
    )
    torch.set_rng_state(state["torch"])
    cuda = state.get("cuda")
    if cuda is not None and torch.cuda.is_available():
        if len(cuda) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda)
        else:
            rank_zero_warn(
                f"The checkpoint holds CUDA RNG states of {len(cuda)} devices but {torch.cuda.device_count()} are"
                " visible; CUDA RNG states are not restored."
            )


def _gather_rng_states(trainer: pl.Trainer) -> list[dict[str, Any]]:
    local = _collect_rng_state()
    if trainer.world_size <= 1 or not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return [local]
    if trainer.interrupted:
        # A checkpoint saved while handling an exception may run on one rank only: a collective would hang.
        return [local]
    # Every rank runs the checkpoint hooks (Lightning requires save_checkpoint on all processes).
    gathered: list[Any] = [None] * torch.distributed.get_world_size()
    torch.distributed.all_gather_object(gathered, local)
    return [{**s, "torch": s["torch"].cpu()} for s in gathered]


class Snapshot(ModelCheckpoint):
    """Saves a crumpets snapshot ``<outdir>/epoch_%02d.ckpt`` every ``snapshot_interval`` epochs.

    A Lightning ``ModelCheckpoint`` keeping every snapshot (``save_top_k=-1``): each holds the model,
    optimizer and LR scheduler states, the loop progress, the state of stateful training dataloaders and of the
    DataModule (Lightning saves those), plus the Python / NumPy / torch / CUDA RNG states of every process
    (under :data:`RNG_STATES_KEY`), which are restored when ``trainer.fit(ckpt_path=...)`` resumes from it.
    Epochs are numbered from 0 like Lightning's ``current_epoch``: the snapshot after the first epoch is
    ``epoch_00.ckpt``. Snapshots are taken after validation when the epoch has one, else at the end of the
    training epoch (Lightning's rule). Every checkpoint written while this callback is attached loads with
    ``torch.load(path, weights_only=True)`` as long as the module's and DataModule's saved hyperparameters and
    state are plain types.

    The RNG states are restored when Lightning loads the checkpoint, before any loader starts, so the streams
    continue as in an uninterrupted run. One exception: a torch ``DataLoader`` without its own ``generator``
    draws a seed from torch's global RNG whenever Lightning creates its iterator, which on resume happens
    before the epoch starts instead of after it; pass ``generator=torch.Generator()`` to keep it off the global
    stream. The crumpets loaders seed every sample themselves and draw nothing from the global RNGs.

    Args:
        outdir: Folder of the snapshots; created on the first save.
        snapshot_interval: Epochs between snapshots; ``0`` or ``None`` disables them (the RNG states are still
            added to checkpoints that other ``ModelCheckpoint`` callbacks write).
        filename: Name pattern (Lightning ``ModelCheckpoint`` syntax, without ``.ckpt``).
        save_top_k: How many snapshots to keep; ``-1`` keeps all (crumpets), ``k`` the best ``k`` by ``monitor``.
        auto_insert_metric_name: Let Lightning turn ``{epoch}`` into ``epoch=0`` in names (off for crumpets names).
        restore_rng: Restore the RNG states when resuming from a checkpoint that has them.
        **kwargs: Further ``ModelCheckpoint`` arguments (``save_last``, ``monitor``, ``verbose``...).

    Raises:
        ValueError: If ``snapshot_interval`` is negative or not an int.

    Example::

        trainer = lightning.Trainer(max_epochs=10, callbacks=[Snapshot("out/snapshots", snapshot_interval=2)])
        trainer.fit(model, datamodule)  # writes out/snapshots/epoch_01.ckpt, epoch_03.ckpt, ...
        trainer.fit(model, datamodule, ckpt_path="out/snapshots/epoch_03.ckpt")  # continues from epoch 4
    """

    def __init__(
        self,
        outdir: str | os.PathLike[str],
        snapshot_interval: int | None = 1,
        filename: str = "epoch_{epoch:02d}",
        save_top_k: int = -1,
        auto_insert_metric_name: bool = False,
        restore_rng: bool = True,
        **kwargs: Any,
    ) -> None:
        interval = 0 if snapshot_interval is None else snapshot_interval
        if isinstance(interval, bool) or not isinstance(interval, int) or interval < 0:
            raise ValueError(
                f"Expected argument `snapshot_interval` to be a non-negative int or None (0/None disables snapshots)"
                f" but got {snapshot_interval!r}."
            )
        super().__init__(
            dirpath=os.fspath(outdir),
            filename=filename,
            every_n_epochs=interval,
            save_top_k=save_top_k,
            auto_insert_metric_name=auto_insert_metric_name,
            **kwargs,
        )
        self.snapshot_interval = interval
        self.restore_rng = restore_rng

    @override
    def on_save_checkpoint(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        checkpoint[RNG_STATES_KEY] = _gather_rng_states(trainer)

    @override
    def on_load_checkpoint(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        states = checkpoint.get(RNG_STATES_KEY)
        if not self.restore_rng or not states:
            return
        rank = trainer.global_rank
        if len(states) != trainer.world_size:
            rank_zero_warn(
                f"The checkpoint holds RNG states of {len(states)} processes but this run has {trainer.world_size};"
                " each process restores the state of the same rank where one exists."
            )
        if rank < len(states):
            _restore_rng_state(states[rank])


def load_snapshot(
    path: str | os.PathLike[str],
    model: torch.nn.Module | None = None,
    optimizer: torch.optim.Optimizer | None = None,
    map_location: str | torch.device | None = "cpu",
    restore_rng: bool = False,
) -> dict[str, Any]:
    """Load a snapshot safely (``weights_only=True``) and apply it, like crumpets' ``resume``.

    Args:
        path: A checkpoint written by :class:`Snapshot` or any Lightning checkpoint.
        model: Module to load the weights into. A ``LightningModule`` takes the state dict as saved; for a
            plain network inside it (e.g. the ``net`` of a ``CrumpetsModule``) the common attribute prefix
            (``"net."``) is stripped when that makes the keys match.
        optimizer: Optimizer to load the first saved optimizer state into.
        map_location: Where to put the loaded tensors (``torch.load``'s argument).
        restore_rng: Also restore this process's RNG states from the snapshot (rank 0's when there are several).

    Returns:
        The loaded checkpoint dict.

    Raises:
        FileNotFoundError: If ``path`` does not exist.
        KeyError: If a model or optimizer is given but the checkpoint has no state for it.
        RuntimeError: If the saved weights do not fit ``model``.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"No snapshot at {os.fspath(path)!r}.")
    checkpoint: dict[str, Any] = torch.load(path, map_location=map_location, weights_only=True)
    if model is not None:
        if "state_dict" not in checkpoint:
            raise KeyError(f"Snapshot {os.fspath(path)!r} has no 'state_dict'; keys: {sorted(checkpoint)}.")
        model.load_state_dict(_match_state_dict(checkpoint["state_dict"], model, path))
    if optimizer is not None:
        states = checkpoint.get("optimizer_states")
        if not states:
            raise KeyError(f"Snapshot {os.fspath(path)!r} has no optimizer state (saved with save_weights_only=True?).")
        optimizer.load_state_dict(states[0])
    if restore_rng and checkpoint.get(RNG_STATES_KEY):
        _restore_rng_state(checkpoint[RNG_STATES_KEY][0])
    return checkpoint


def _match_state_dict(
    state_dict: Mapping[str, torch.Tensor], model: torch.nn.Module, path: str | os.PathLike[str]
) -> Mapping[str, torch.Tensor]:
    wanted = set(model.state_dict())
    if set(state_dict) == wanted:
        return state_dict
    prefixes = {key.split(".", 1)[0] for key in state_dict if "." in key}
    for prefix in sorted(prefixes):
        stripped = {key[len(prefix) + 1 :]: v for key, v in state_dict.items() if key.startswith(prefix + ".")}
        if set(stripped) == wanted:
            return stripped
    missing = sorted(wanted - set(state_dict))[:5]
    unexpected = sorted(set(state_dict) - wanted)[:5]
    raise RuntimeError(
        f"The weights in snapshot {os.fspath(path)!r} do not fit {type(model).__name__}: missing keys {missing},"
        f" unexpected keys {unexpected} (first five each), and no attribute prefix such as 'net.' makes them match."
    )
