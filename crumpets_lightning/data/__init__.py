"""The crumpets data pipeline: ZeroMQ + shared-memory loader, workers, CPU augmentation, RNGs, datasets."""

from __future__ import annotations

from crumpets_lightning._lazy import lazy_getattr

# public name -> submodule of this package that defines it
_NAMES = {
    # loader and transport
    "TurboDataLoader": "loader.loader",
    "TorchTurboDataLoader": "loader.torch_loader",
    # workers
    "Worker": "workers.base",
    "BufferWorker": "workers.base",
    "make_buffer_spec": "workers.base",
    "make_fill_value": "workers.base",
    "ImageWorker": "workers.image",
    "ClassificationWorker": "workers.image",
    "FCNWorker": "workers.image",
    "SegmentationWorker": "workers.image",
    "SaliencyWorker": "workers.image",
    # augmentation (CPU)
    "decode_image": "augment.augmentation",
    "calc_scale_ratio": "augment.augmentation",
    "make_transform": "augment.augmentation",
    "rotate_and_resize": "augment.augmentation",
    "randomize_image": "augment.augmentation",
    "add_gamma": "augment.pixel_ops",
    "add_noise_rgb": "augment.pixel_ops",
    "add_noise_other": "augment.pixel_ops",
    "add_blur": "augment.pixel_ops",
    "apply_pixel_ops": "augment.pixel_ops",
    "AUGMENTATION_FIELDS": "augment.record",
    "NEUTRAL_AUGMENTATION": "augment.record",
    "augmentation_to_records": "augment.record",
    "augmentation_from_records": "augment.record",
    # random parameters and presets
    "RNG": "augment.rng",
    "MixtureRNG": "augment.rng",
    "NoRNG": "augment.rng",
    "human2gamma": "augment.rng",
    "AUGMENTATION_TRAIN": "augment.presets",
    "INPUT_PARAMS_VAL": "augment.presets",
    "NO_AUGMENTATION": "augment.presets",
    "no_augmentation": "augment.presets",
    # samples and datasets
    "pack_sample": "transport.codec",
    "unpack_sample": "transport.codec",
    "MsgpackDataset": "sources.datasets",
    "ImageFolderDataset": "sources.datasets",
    "write_msgpack": "sources.datasets",
    "open_source": "sources.datasets",
    # Lightning
    "CrumpetsDataModule": "datamodule",
    # errors
    "CrumpetsDataError": "errors",
    "SampleError": "errors",
    "WorkerError": "errors",
    "WorkerDiedError": "errors",
}

__all__ = sorted(_NAMES)
__getattr__ = lazy_getattr(__name__, _NAMES)


def __dir__() -> list[str]:
    return __all__
