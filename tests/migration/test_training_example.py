"""The Quick Start Guide's training example: a dict network, Unpacker, TorchTurboDataLoader, losses, metrics,
PolyPolicy, and what replaces the crumpets Trainer (``lightning.Trainer`` + ``CrumpetsModule``).

The docs leave the network's body (``foo``), ``make_loader`` ("implementation can be found in previous
section"), the data sets and a few numbers to the reader; :func:`_given` defines them.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Any

import lightning
import pytest
import torch

from crumpets_lightning.data import CrumpetsDataModule, pack_sample
from crumpets_lightning.modules import CrumpetsModule
from tests.migration._docs import (
    MAKE_LOADER,
    MAKE_LOADER_CRUMPETS_IMPORTS,
    NET_BODY,
    TRAINING_BODY,
    TRAINING_CRUMPETS_IMPORTS,
    UNPACKER_BODY,
    port,
    run,
)
from tests.migration.conftest import photo_jpegs


def _given() -> dict[str, Any]:
    """What the docs leave to the reader: the net's body, the data, the loader factory, the numbers."""
    torch.manual_seed(0)
    samples = [pack_sample({"image": data, "label": i % 2}) for i, data in enumerate(photo_jpegs(12, (48, 64)))]
    scope = run(port(MAKE_LOADER_CRUMPETS_IMPORTS, MAKE_LOADER))
    foo = torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(),
        torch.nn.Linear(8, 2),
    )  # fmt: skip
    return {
        "foo": foo,
        "make_loader": scope["make_loader"],
        "train_set": samples[:8],
        "val_set": samples[8:],
        "batch_size": 4,
        "devices": "cpu:0",
        "lr": 0.01,
        "momentum": 0.9,
        "epochs": 2,
        "cuda": False,
        "output_key": "output",
        "input_key": "image",
    }


def _first_sample(loader: Any) -> dict[str, Any]:
    with loader:
        for _, mini_batches in loader:
            return mini_batches[0]
    raise AssertionError("the loader yielded nothing")


def test_a_dict_network_gets_the_loaders_tensors() -> None:
    given = _given()
    scope = run(port(TRAINING_CRUMPETS_IMPORTS, NET_BODY), given)
    sample = _first_sample(given["make_loader"](given["train_set"], 4, devices="cpu:0"))
    assert sample["image"].dtype == torch.uint8 and sample["image"].shape == (4, 3, 32, 32)
    out = scope["net"](sample)
    assert out["output"].shape == (4, 2)


def test_unpacker_example_with_crumpets_argument_order_and_uint8_input() -> None:
    # crumpets: Unpacker(net, output_key, input_key), and the network gets float input from uint8 images
    given = _given()
    scope = run(port(TRAINING_CRUMPETS_IMPORTS, UNPACKER_BODY), given)
    sample = _first_sample(given["make_loader"](given["train_set"], 4, devices="cpu:0"))
    out = scope["net"](sample)
    assert out["output"].shape == (4, 2) and out["output"].dtype == torch.float32


def test_training_example_builds_and_trains_a_crumpets_style_loop() -> None:
    given = _given()
    # `network = Unpacker(Net())` wraps the docs' second Net, the one that takes a tensor (`return foo(sample)`)
    net_scope = run(port(TRAINING_CRUMPETS_IMPORTS, UNPACKER_BODY), given)
    scope = run(port(TRAINING_CRUMPETS_IMPORTS, TRAINING_BODY), {**given, "Net": net_scope["Net"]})
    network, train, loss, metric = scope["network"], scope["train"], scope["loss"], scope["metric"]
    optimizer, scheduler = scope["optimizer"], scope["scheduler"]
    # what the crumpets Trainer did with these objects, one epoch
    first_lr = optimizer.param_groups[0]["lr"]
    with train:
        for _, mini_batches in train:
            for sample in mini_batches:
                out = network(sample)
                value = loss(out)
                optimizer.zero_grad()
                value.backward()
                optimizer.step()
                metric(out)
            scheduler.step()
    assert torch.isfinite(value)
    assert 0.0 <= float(metric.compute()) <= 1.0
    assert optimizer.param_groups[0]["lr"] < first_lr  # the poly policy decays over the 2 epochs


def test_the_crumpets_trainer_points_to_lightning_and_the_port_trains(tmp_path: Path) -> None:
    with pytest.raises(ImportError, match=r"lightning\.Trainer and a CrumpetsModule"):
        exec("from crumpets_lightning.modules import Trainer", {})
    given = _given()
    scope = run(port(TRAINING_CRUMPETS_IMPORTS, TRAINING_BODY), {**given, "Net": torch.nn.Module})
    # Trainer(network, optimizer, loss, metric, train_policy, val_policy, train_iter, val_iter, outdir) becomes:
    model = CrumpetsModule(
        net=given["foo"],
        loss=scope["loss"],
        metric=scope["metric"],
        optimizer=partial(torch.optim.SGD, lr=given["lr"], momentum=given["momentum"], weight_decay=1e-4),
        scheduler=partial(type(scope["scheduler"]), num_epochs=given["epochs"]),
    )
    data = CrumpetsDataModule(
        given["train_set"], given["val_set"], image_size=(32, 32), batch_size=4, nworkers=1, drop_last=False
    )
    trainer = lightning.Trainer(
        max_epochs=given["epochs"], accelerator="cpu", default_root_dir=tmp_path, logger=False,
        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
    )  # fmt: skip
    trainer.fit(model, data)
    assert trainer.global_step == 4  # 8 samples, batch 4, 2 epochs
    assert 0.0 <= float(trainer.callback_metrics["val/accuracy"]) <= 1.0
