"""The public names users import (SPEC section 2) exist and resolve, so none disappears by accident."""

from __future__ import annotations

import importlib

import pytest

SPEC_NAMES = {
    "crumpets_lightning.data": [
        "TurboDataLoader", "TorchTurboDataLoader", "Worker", "BufferWorker", "ImageWorker", "ClassificationWorker",
        "FCNWorker", "SegmentationWorker", "SaliencyWorker", "decode_image", "randomize_image", "rotate_and_resize",
        "make_transform", "calc_scale_ratio", "add_gamma", "add_noise_rgb", "add_noise_other", "add_blur", "RNG",
        "MixtureRNG", "NoRNG", "human2gamma", "AUGMENTATION_TRAIN", "INPUT_PARAMS_VAL", "MsgpackDataset",
        "ImageFolderDataset", "write_msgpack", "pack_sample", "unpack_sample", "CrumpetsDataModule",
        "SampleError", "WorkerError", "WorkerDiedError",
    ],
    "crumpets_lightning.modules": [
        "CrumpetsModule", "CrossEntropyLoss", "L1Loss", "LabelSmoothing", "MSELoss", "NLLLoss", "NSSLoss",
        "AccuracyMetric", "AverageMetric", "CombinedMetric", "ConfusionMatrix", "MSELossMetric", "MSEMetric",
        "NSSMetric", "NoopMetric", "NoopPolicy", "PolyPolicy", "SigmoidPolicy", "RampPolicy", "ReduceLROnPlateau",
        "Randomizer", "Normalize", "Unpacker",
    ],
    "crumpets_lightning.callbacks": ["CrumpetsHooks", "Snapshot", "JSONLogger", "DataWaitMonitor", "load_snapshot"],
}  # fmt: skip


@pytest.mark.parametrize("package", sorted(SPEC_NAMES))
def test_spec_names_are_exported_and_resolve(package):
    module = importlib.import_module(package)
    missing = [name for name in SPEC_NAMES[package] if name not in module.__all__]
    assert not missing, f"{package}.__all__ lacks {missing}"
    for name in module.__all__:
        assert getattr(module, name) is not None, name


def test_unknown_name_raises_attribute_error():
    data = importlib.import_module("crumpets_lightning.data")
    with pytest.raises(AttributeError, match="NotAThing"):
        data.NotAThing  # noqa: B018


def test_lightning_bases():
    import lightning.pytorch as pl
    import torchmetrics

    from crumpets_lightning.callbacks import JSONLogger, Snapshot
    from crumpets_lightning.data import CrumpetsDataModule
    from crumpets_lightning.modules import AccuracyMetric, CrumpetsModule, PolyPolicy

    assert issubclass(CrumpetsDataModule, pl.LightningDataModule)
    assert issubclass(CrumpetsModule, pl.LightningModule)
    assert issubclass(Snapshot, pl.callbacks.ModelCheckpoint)
    assert issubclass(JSONLogger, pl.loggers.Logger)
    assert issubclass(AccuracyMetric, torchmetrics.Metric)
    import torch

    assert issubclass(PolyPolicy, torch.optim.lr_scheduler.LRScheduler)
