"""The crumpets data pipeline: ZeroMQ + shared-memory loader, workers, CPU augmentation, RNGs, datasets."""

from __future__ import annotations

from crumpets_lightning._lazy import lazy_getattr

# public name -> submodule of this package that defines it
_NAMES = {
    # loader and transport
    "TurboDataLoader": "loader",
    "TorchTurboDataLoader": "torch_loader",
    # workers
    "Worker": "worker",
    "BufferWorker": "worker",
    "make_buffer_spec": "worker",
    "make_fill_value": "worker",
    "ImageWorker": "workers",
    "ClassificationWorker": "workers",
    "FCNWorker": "workers",
    "SegmentationWorker": "workers",
    "SaliencyWorker": "workers",
    # augmentation (CPU)
    "decode_image": "augmentation",
    "calc_scale_ratio": "augmentation",
    "make_transform": "augmentation",
    "rotate_and_resize": "augmentation",
    "randomize_image": "augmentation",
    "add_gamma": "pixel_ops",
    "add_noise_rgb": "pixel_ops",
    "add_noise_other": "pixel_ops",
    "add_blur": "pixel_ops",
    "apply_pixel_ops": "pixel_ops",
    "AUGMENTATION_FIELDS": "augmentation_record",
    "NEUTRAL_AUGMENTATION": "augmentation_record",
    "augmentation_to_records": "augmentation_record",
    "augmentation_from_records": "augmentation_record",
    # random parameters and presets
    "RNG": "rng",
    "MixtureRNG": "rng",
    "NoRNG": "rng",
    "human2gamma": "rng",
    "AUGMENTATION_TRAIN": "presets",
    "INPUT_PARAMS_VAL": "presets",
    "NO_AUGMENTATION": "presets",
    "no_augmentation": "presets",
    # samples and datasets
    "pack_sample": "codec",
    "unpack_sample": "codec",
    "MsgpackDataset": "datasets",
    "ImageFolderDataset": "datasets",
    "write_msgpack": "datasets",
    "open_source": "datasets",
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
