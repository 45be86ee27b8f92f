"""DDP faults (issue 7): under ``ddp_spawn`` with 2 CPU ranks, one rank raising mid-epoch ends the run with a
clear error, leaves no orphaned loader workers, and the next run starts cleanly (it sweeps the shared memory
and socket directories the killed rank could not remove)."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import pytest
import torch
from lightning.pytorch.callbacks import Callback

from tests.conftest import crumpets_shm_segments, crumpets_socket_dirs, descendants
from tests.data.test_datamodule import TinyModel, make_datamodule, make_samples, make_trainer


@pytest.fixture(scope="module", autouse=True)
def _resource_tracker() -> Iterator[None]:
    """ddp_spawn starts multiprocessing's resource tracker, which lives as long as pytest: start it first."""
    from multiprocessing import resource_tracker

    resource_tracker.ensure_running()
    yield


class FailingRankModel(TinyModel):
    """Rank ``fail_rank`` raises in ``training_step`` at ``fail_step``; the other rank carries on into DDP sync."""

    def __init__(self, fail_rank: int, fail_step: int) -> None:
        super().__init__()
        self.fail_rank = fail_rank
        self.fail_step_at = fail_step

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        if self.global_rank == self.fail_rank and self.global_step == self.fail_step_at:
            raise RuntimeError(f"boom on rank {self.global_rank} at step {self.global_step}")
        return super().training_step(batch, batch_idx)


class ProcessRecorder(Callback):
    """Each rank writes its pid and its loader worker pids (its child processes) once batches flow."""

    def __init__(self, out_dir: Path) -> None:
        self.out_dir = out_dir

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: Any, batch: Any, batch_idx: int) -> None:
        if batch_idx == 1:
            record = {"pid": os.getpid(), "children": sorted(descendants())}
            (self.out_dir / f"rank{trainer.global_rank}.json").write_text(json.dumps(record))


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _owned_by(pids: set[int]) -> list[str]:
    """Shared-memory segments and socket directories named after one of ``pids``."""
    names = crumpets_shm_segments() | crumpets_socket_dirs()
    return sorted(n for n in names if any(n.startswith(f"crumpets-lightning-{pid}-") for pid in pids))


def test_a_rank_failing_mid_epoch_ends_the_run_cleanly_and_the_next_run_starts(tmp_path: Path) -> None:
    dm = make_datamodule(make_samples(48), None, nworkers=2, seed=1)
    trainer = make_trainer(
        devices=2, strategy="ddp_spawn", max_epochs=1, num_sanity_val_steps=0, callbacks=[ProcessRecorder(tmp_path)]
    )
    start = time.monotonic()
    with pytest.raises(Exception, match="boom on rank 1 at step 3"):
        trainer.fit(FailingRankModel(fail_rank=1, fail_step=3), datamodule=dm)
    elapsed = time.monotonic() - start

    records = [json.loads((tmp_path / f"rank{rank}.json").read_text()) for rank in range(2)]
    rank_pids = {record["pid"] for record in records}
    worker_pids = {pid for record in records for pid in record["children"]}
    assert len(worker_pids) >= 4, records  # 2 loader workers per rank were running
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and any(_alive(pid) for pid in rank_pids | worker_pids):
        time.sleep(0.05)
    orphans = sorted(pid for pid in rank_pids | worker_pids if _alive(pid))
    assert not orphans, f"processes outlived the failed run: {orphans}"
    assert elapsed < 45, f"the failed run took {elapsed:.1f} s to end"

    # the next run starts and finishes normally, and its loaders sweep whatever the killed ranks left behind
    # (a rank ended by SIGTERM/SIGKILL cannot remove its shared memory or socket directory itself)
    trainer = make_trainer(max_epochs=1, num_sanity_val_steps=0, limit_train_batches=2)
    trainer.fit(TinyModel(), datamodule=make_datamodule(make_samples(16), None, nworkers=1, seed=2))
    assert trainer.state.finished and trainer.global_step == 2
    assert _owned_by(rank_pids) == []
