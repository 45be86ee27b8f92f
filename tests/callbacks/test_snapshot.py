"""Snapshot: crumpets epoch_%02d files, safe loading, RNG and loader state, resume, load_snapshot."""

from __future__ import annotations

import multiprocessing
import random
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import lightning.pytorch as pl
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from crumpets_lightning.callbacks.snapshot import RNG_STATES_KEY, Snapshot, _gather_rng_states, load_snapshot
from tests.callbacks._helpers import DictDataset, DictModule, StatefulDataLoader, loaders, make_trainer


def _fit(tmp_path: Path, outdir: Path, epochs: int, interval: int | None, **kwargs: Any) -> pl.Trainer:
    trainer = make_trainer(tmp_path, max_epochs=epochs, callbacks=[Snapshot(outdir, snapshot_interval=interval)])
    train, val = loaders(batch_size=4, train=8, val=4)
    trainer.fit(DictModule(), train, val, **kwargs)
    return trainer


@pytest.mark.parametrize("interval", [1, 2])
def test_files_every_interval(tmp_path: Path, interval: int) -> None:
    epochs = 3
    outdir = tmp_path / "snapshots"
    _fit(tmp_path, outdir, epochs, interval)
    expected = sorted(f"epoch_{epoch:02d}.ckpt" for epoch in range(epochs) if (epoch + 1) % interval == 0)
    assert sorted(p.name for p in outdir.iterdir()) == expected


@pytest.mark.parametrize("interval", [0, None])
def test_zero_or_none_disables(tmp_path: Path, interval: int | None) -> None:
    outdir = tmp_path / "snapshots"
    _fit(tmp_path, outdir, 2, interval)
    assert not outdir.exists() or not any(outdir.iterdir())


@pytest.mark.parametrize("interval", [-1, 1.5, True, "2"])
def test_bad_interval(tmp_path: Path, interval: Any) -> None:
    with pytest.raises(ValueError, match="snapshot_interval"):
        Snapshot(tmp_path, snapshot_interval=interval)


def test_contents_load_with_weights_only(tmp_path: Path) -> None:
    outdir = tmp_path / "snapshots"
    module = DictModule()
    trainer = make_trainer(tmp_path, max_epochs=2, callbacks=[Snapshot(outdir)])
    train = StatefulDataLoader(DictDataset(8), batch_size=4)
    trainer.fit(module, train)
    checkpoint = torch.load(outdir / "epoch_01.ckpt", weights_only=True)
    assert checkpoint["epoch"] == 1
    state = module.state_dict()
    assert set(checkpoint["state_dict"]) == set(state)
    for key, value in state.items():
        assert torch.equal(checkpoint["state_dict"][key], value)
    optimizer_state = trainer.optimizers[0].state_dict()
    for param_id, param_state in optimizer_state["state"].items():
        saved = checkpoint["optimizer_states"][0]["state"][param_id]["momentum_buffer"]
        assert torch.equal(saved, param_state["momentum_buffer"])
    assert checkpoint["lr_schedulers"][0]["last_epoch"] == 2
    # the stateful training loader's state, as Lightning stores it
    loader_states = checkpoint["loops"]["fit_loop"]["state_dict"]["combined_loader"]
    assert loader_states == [{"epochs_started": 2, "name": "stateful"}]
    (rng,) = checkpoint[RNG_STATES_KEY]
    assert set(rng) >= {"python", "numpy", "torch"}


def test_rng_states_match_the_process(tmp_path: Path) -> None:
    """The saved states are the ones the process had when saving: replaying them gives the same draws."""
    drawn: dict[str, Any] = {}

    class DrawAfterSave(pl.Callback):
        def on_save_checkpoint(self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: Any) -> None:
            state = random.getstate(), np.random.get_state(), torch.get_rng_state()
            drawn["values"] = (random.random(), np.random.rand(3).tolist(), torch.rand(3))
            random.setstate(state[0])
            np.random.set_state(state[1])
            torch.set_rng_state(state[2])

    outdir = tmp_path / "snapshots"
    trainer = make_trainer(tmp_path, max_epochs=1, callbacks=[DrawAfterSave(), Snapshot(outdir)])
    train, _ = loaders(batch_size=4, train=8)
    trainer.fit(DictModule(), train)
    random.seed(1)
    np.random.seed(1)
    torch.manual_seed(1)
    load_snapshot(outdir / "epoch_00.ckpt", restore_rng=True)
    python_value, numpy_values, torch_values = drawn["values"]
    assert random.random() == python_value
    assert np.random.rand(3).tolist() == numpy_values
    assert torch.equal(torch.rand(3), torch_values)


class _RecordRandom(pl.Callback):
    """Draws from every global RNG at each epoch start (what augmentation or dropout would consume)."""

    def __init__(self) -> None:
        self.draws: dict[int, tuple[float, float, float]] = {}

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.draws[trainer.current_epoch] = (random.random(), float(np.random.rand()), float(torch.rand(())))


def _own_generator_loaders() -> tuple[DataLoader, DataLoader]:
    # A DataLoader without a generator draws its base seed from torch's global RNG whenever Lightning creates an
    # iterator, which on resume happens before the epoch starts rather than after: keep it off the global stream.
    return (
        DataLoader(DictDataset(8, seed=0), batch_size=4, generator=torch.Generator()),
        DataLoader(DictDataset(4, seed=1), batch_size=4, generator=torch.Generator()),
    )


def test_resume_restores_rng_and_training(tmp_path: Path) -> None:
    pl.seed_everything(7)
    full_record = _RecordRandom()
    full_module = DictModule()
    full = make_trainer(tmp_path, max_epochs=3, callbacks=[full_record, Snapshot(tmp_path / "a")])
    full.fit(full_module, *_own_generator_loaders())

    pl.seed_everything(12345)  # a different state: only the snapshot can bring back the old streams
    resumed_record = _RecordRandom()
    resumed_module = DictModule()
    resumed = make_trainer(
        tmp_path, max_epochs=3, callbacks=[resumed_record, Snapshot(tmp_path / "b")], num_sanity_val_steps=0
    )
    resumed.fit(resumed_module, *_own_generator_loaders(), ckpt_path=tmp_path / "a" / "epoch_01.ckpt")

    assert list(resumed_record.draws) == [2]
    assert resumed_record.draws[2] == full_record.draws[2]
    for key, value in full_module.state_dict().items():
        assert torch.allclose(resumed_module.state_dict()[key], value)


def test_restore_rng_false_leaves_streams(tmp_path: Path) -> None:
    _fit(tmp_path, tmp_path / "a", 2, 1)
    pl.seed_everything(5)
    expected = random.random()
    pl.seed_everything(5)
    snapshot = Snapshot(tmp_path / "b", restore_rng=False)
    checkpoint = torch.load(tmp_path / "a" / "epoch_00.ckpt", weights_only=True)
    snapshot.on_load_checkpoint(make_trainer(tmp_path), DictModule(), checkpoint)
    assert random.random() == expected


def test_load_snapshot_into_module_net_and_optimizer(tmp_path: Path) -> None:
    outdir = tmp_path / "snapshots"
    trained = DictModule()
    trainer = make_trainer(tmp_path, max_epochs=1, callbacks=[Snapshot(outdir)])
    trainer.fit(trained, loaders(batch_size=4, train=8)[0])
    path = outdir / "epoch_00.ckpt"

    module = DictModule()
    optimizer = torch.optim.SGD(module.parameters(), lr=0.5, momentum=0.9)
    checkpoint = load_snapshot(path, module, optimizer)
    assert checkpoint["epoch"] == 0
    assert torch.equal(module.net.weight, trained.net.weight)
    assert optimizer.param_groups[0]["lr"] == trainer.optimizers[0].param_groups[0]["lr"]
    saved_momentum = trainer.optimizers[0].state_dict()["state"][0]["momentum_buffer"]
    assert torch.equal(optimizer.state_dict()["state"][0]["momentum_buffer"], saved_momentum)

    # a plain network: the "net." prefix of the LightningModule attribute is stripped
    net = torch.nn.Linear(trained.net.in_features, trained.net.out_features)
    load_snapshot(path, net)
    assert torch.equal(net.bias, trained.net.bias)

    with pytest.raises(RuntimeError, match="do not fit Sequential"):
        load_snapshot(path, torch.nn.Sequential(torch.nn.Linear(4, 3)))
    with pytest.raises(FileNotFoundError, match=r"missing\.ckpt"):
        load_snapshot(tmp_path / "missing.ckpt")


def test_load_snapshot_refuses_pickled_objects(tmp_path: Path) -> None:
    path = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {}, "payload": _Arbitrary()}, path)
    with pytest.raises(Exception, match=r"weights_only|Unsupported global"):
        load_snapshot(path)


class _Arbitrary:
    """An object only a full unpickler can rebuild."""


def test_built_from_a_config_like_lightning_cli(tmp_path: Path) -> None:
    """jsonargparse passes every resolved ModelCheckpoint default explicitly: the crumpets defaults must hold."""
    from jsonargparse import ArgumentParser

    parser = ArgumentParser()
    parser.add_argument("--callbacks", type=list[pl.Callback])
    spec = {"outdir": str(tmp_path / "snapshots"), "save_last": True}
    config = parser.parse_object({"callbacks": [{"class_path": f"{Snapshot.__module__}.Snapshot", "init_args": spec}]})
    (snapshot,) = parser.instantiate(config).callbacks
    assert isinstance(snapshot, Snapshot)
    trainer = make_trainer(tmp_path, max_epochs=2, callbacks=[snapshot])
    trainer.fit(DictModule(), loaders(batch_size=4, train=8)[0])
    assert sorted(p.name for p in (tmp_path / "snapshots").iterdir()) == ["epoch_00.ckpt", "epoch_01.ckpt", "last.ckpt"]


def _gather_on_rank(rank: int, folder: str) -> None:
    """One of two forked processes: seed per rank, gather the RNG states over gloo, save what came back."""
    torch.distributed.init_process_group("gloo", init_method=f"file://{folder}/store", rank=rank, world_size=2)
    try:
        random.seed(100 + rank)
        np.random.seed(200 + rank)
        torch.manual_seed(300 + rank)
        own = {
            "python": list(random.getstate()[1]),
            "numpy": np.random.get_state(legacy=False)["state"]["key"].tolist(),
            "torch": torch.get_rng_state(),
        }
        gathered = _gather_rng_states(SimpleNamespace(world_size=2, interrupted=False))  # type: ignore[arg-type]
        local_only = _gather_rng_states(SimpleNamespace(world_size=2, interrupted=True))  # type: ignore[arg-type]
        torch.save({"own": own, "gathered": gathered, "local_only": local_only}, f"{folder}/rank{rank}.pt")
    finally:
        torch.distributed.destroy_process_group()


def test_ddp_gathers_every_ranks_rng_state(tmp_path: Path) -> None:
    """Under DDP each rank's states are gathered into the checkpoint (2 forked gloo processes, no re-import)."""
    context = multiprocessing.get_context("fork")
    processes = [context.Process(target=_gather_on_rank, args=(rank, str(tmp_path))) for rank in range(2)]
    for process in processes:
        process.start()
    for process in processes:
        process.join(timeout=60)
    for process in processes:
        if process.is_alive():
            process.kill()
            process.join()
    assert [process.exitcode for process in processes] == [0, 0]
    results = [torch.load(tmp_path / f"rank{rank}.pt", weights_only=True) for rank in range(2)]
    for result in results:
        assert len(result["gathered"]) == 2
        for rank, state in enumerate(result["gathered"]):
            own = results[rank]["own"]
            assert state["python"]["state"].tolist() == own["python"]
            assert state["numpy"]["key"].tolist() == own["numpy"]
            assert torch.equal(state["torch"], own["torch"])
        # while handling an exception (possibly on one rank only) no collective runs: the local state only
        (local,) = result["local_only"]
        assert torch.equal(local["torch"], result["own"]["torch"])
    assert not torch.equal(results[0]["own"]["torch"], results[1]["own"]["torch"])
