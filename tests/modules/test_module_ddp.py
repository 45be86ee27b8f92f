"""CrumpetsModule under real 2-process DDP (gloo on CPU, Lightning's ``ddp`` strategy): validation and test on
padded shards equal the single-process values on the data without repeats, exactly; a rank whose batch is all
padding still takes part; predict returns every sample once; no ``sync_dist`` warning for epoch-level logs (the
module's and the DataWaitMonitor's).

The ranks are plain subprocesses with the environment Lightning reads for externally launched processes.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any

import pytest
import torch

from tests.modules.test_evaluation import (
    SAMPLES,
    batch_loader,
    evaluate,
    make_batch,
    make_model,
    make_samples,
)

WORLD_SIZE = 2
# rank 0 holds six samples; rank 1 one sample, two repeats and a batch of repeats only
RANK_BATCHES = {
    0: [([0, 1, 2], [False] * 3), ([3, 4, 5], [False] * 3)],
    1: [([6, 0, 1], [False, True, True]), ([2, 3, 4], [True, True, True])],
}
TRAIN_ROWS = {0: [[0, 1], [2, 3]], 1: [[4, 5], [6, 0]]}


def _worker(rank: int, out_dir: str) -> None:
    import lightning

    from crumpets_lightning.callbacks.data_wait import DataWaitMonitor

    torch.set_num_threads(1)
    samples = make_samples()
    val = [make_batch(samples, rows, flags) for rows, flags in RANK_BATCHES[rank]]
    train = [make_batch(samples, rows) for rows in TRAIN_ROWS[rank]]
    model = make_model()
    trainer = lightning.Trainer(
        accelerator="cpu",
        devices=WORLD_SIZE,
        strategy="ddp",
        use_distributed_sampler=False,
        max_steps=2,
        num_sanity_val_steps=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[DataWaitMonitor(verbose=False)],
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer.fit(model, batch_loader(train), batch_loader(val))
    fit_metrics = {k: v for k, v in trainer.callback_metrics.items() if k.startswith(("train/", "data/"))}
    val_metrics = trainer.validate(model, batch_loader(val), verbose=False)[0]
    test_metrics = trainer.test(model, batch_loader(val), verbose=False)[0]
    predictions = trainer.predict(model, batch_loader(val))
    keys = [key for rows, flags in RANK_BATCHES[rank] for key, pad in zip(rows, flags) if not pad]
    torch.save(
        {
            "predictions": torch.cat(predictions),  # type: ignore[arg-type]
            "keys": keys,
            "val": val_metrics,
            "test": test_metrics,
            "fit": fit_metrics,
            "confusion": model.epoch_metric_values["val/confusion"],
            "state": model.state_dict(),
            "warnings": [str(w.message) for w in caught],
        },
        os.path.join(out_dir, f"rank{rank}.pt"),
    )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.timeout(110)
def test_ddp_evaluation_is_exact_and_epoch_logs_are_synced(tmp_path: Path) -> None:
    repo = Path(__file__).resolve().parents[2]
    base = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(repo), os.environ.get("PYTHONPATH", "")]),
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": str(_free_port()),
        "WORLD_SIZE": str(WORLD_SIZE),
        "NODE_RANK": "0",
    }
    code = "import sys; from tests.modules.test_module_ddp import _worker; _worker(int(sys.argv[1]), sys.argv[2])"
    ranks = [
        subprocess.Popen(
            [sys.executable, "-c", code, str(rank), str(tmp_path)],
            cwd=tmp_path,
            env={**base, "RANK": str(rank), "LOCAL_RANK": str(rank)},
        )
        for rank in range(WORLD_SIZE)
    ]
    try:
        codes = [process.wait(timeout=100) for process in ranks]
    finally:
        for process in ranks:
            if process.poll() is None:
                process.kill()
                process.wait()
    assert codes == [0] * WORLD_SIZE
    results: list[dict[str, Any]] = [torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in range(2)]

    # no "use sync_dist=True" warning: every epoch-level value is reduced across ranks
    assert not [w for w in results[0]["warnings"] if "sync_dist" in w], results[0]["warnings"]
    assert {"train/loss_step", "train/loss_epoch", "data/epoch_wait_fraction"} <= set(results[0]["fit"])

    # predict: every sample once over both ranks
    keys = results[0]["keys"] + results[1]["keys"]
    assert sorted(keys) == list(range(SAMPLES))
    assert sum(len(r["predictions"]) for r in results) == SAMPLES

    # the single-process values on the data without repeats, with the weights the DDP run ended with
    model = make_model()
    model.load_state_dict(results[0]["state"])
    samples = make_samples()
    exact = evaluate(model, [make_batch(samples, rows) for rows in ([0, 1, 2], [3, 4, 5], [6])])
    for rank in range(WORLD_SIZE):
        for name, value in {**results[rank]["val"], **results[rank]["test"]}.items():
            torch.testing.assert_close(torch.as_tensor(value), torch.as_tensor(exact[name]), msg=f"{name} rank {rank}")
        torch.testing.assert_close(results[rank]["confusion"], exact["val/confusion"])
    predicted = torch.cat([results[0]["predictions"], results[1]["predictions"]])
    order = torch.tensor(keys).argsort()
    torch.testing.assert_close(predicted[order], exact["predictions"])
    # a mean of the two ranks' means would differ (rank 1 has one real sample, rank 0 six)
    assert int(results[0]["confusion"].sum()) == SAMPLES
