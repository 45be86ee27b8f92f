"""The crumpets data pipeline: ZeroMQ + shared-memory loader, workers, CPU augmentation, RNGs, datasets."""

from __future__ import annotations

from typing import TYPE_CHECKING

from crumpets_lightning._lazy import lazy_getattr

if TYPE_CHECKING:  # what type checkers see; at run time each name is imported on first use (__getattr__)
    from crumpets_lightning.data.augment.augmentation import (
        calc_scale_ratio,
        make_transform,
        randomize_image,
        rotate_and_resize,
    )
    from crumpets_lightning.data.augment.decode import decode_image
    from crumpets_lightning.data.augment.params import AugmentationParams
    from crumpets_lightning.data.augment.pixel_ops import (
        add_blur,
        add_gamma,
        add_noise_other,
        add_noise_rgb,
        apply_pixel_ops,
    )
    from crumpets_lightning.data.augment.presets import (
        AUGMENTATION_TRAIN,
        INPUT_PARAMS_VAL,
        NO_AUGMENTATION,
        no_augmentation,
    )
    from crumpets_lightning.data.augment.record import (
        AUGMENTATION_FIELDS,
        NEUTRAL_AUGMENTATION,
        augmentation_from_records,
        augmentation_to_records,
    )
    from crumpets_lightning.data.augment.rng import RNG, MixtureRNG, NoRNG, human2gamma
    from crumpets_lightning.data.datamodule import CrumpetsDataModule
    from crumpets_lightning.data.errors import (
        ConfigurationError,
        CrumpetsDataError,
        SampleError,
        WorkerDiedError,
        WorkerError,
    )
    from crumpets_lightning.data.loader.loader import TurboDataLoader
    from crumpets_lightning.data.loader.torch_loader import TorchTurboDataLoader
    from crumpets_lightning.data.sources.image_folder import ImageFolderDataset
    from crumpets_lightning.data.sources.msgpack_file import MsgpackDataset, write_msgpack
    from crumpets_lightning.data.sources.open import check_source, open_source
    from crumpets_lightning.data.sources.shards import ShardedDataset, WindowShuffledShards
    from crumpets_lightning.data.transport.codec import pack_sample, unpack_sample
    from crumpets_lightning.data.workers.base import BufferWorker, Worker, make_buffer_spec, make_fill_value
    from crumpets_lightning.data.workers.image import (
        ClassificationWorker,
        FCNWorker,
        ImageWorker,
        SaliencyWorker,
        SegmentationWorker,
    )

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
    "decode_image": "augment.decode",
    "calc_scale_ratio": "augment.augmentation",
    "make_transform": "augment.augmentation",
    "rotate_and_resize": "augment.augmentation",
    "randomize_image": "augment.augmentation",
    "add_gamma": "augment.pixel_ops",
    "add_noise_rgb": "augment.pixel_ops",
    "add_noise_other": "augment.pixel_ops",
    "add_blur": "augment.pixel_ops",
    "apply_pixel_ops": "augment.pixel_ops",
    "AugmentationParams": "augment.params",
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
    "MsgpackDataset": "sources.msgpack_file",
    "ImageFolderDataset": "sources.image_folder",
    "ShardedDataset": "sources.shards",
    "WindowShuffledShards": "sources.shards",
    "write_msgpack": "sources.msgpack_file",
    "open_source": "sources.open",
    "check_source": "sources.open",
    # Lightning
    "CrumpetsDataModule": "datamodule",
    # errors
    "ConfigurationError": "errors",
    "CrumpetsDataError": "errors",
    "SampleError": "errors",
    "WorkerError": "errors",
    "WorkerDiedError": "errors",
}

__all__ = [  # a literal list (the keys of _NAMES, tested), so type checkers know what is exported
    "AUGMENTATION_FIELDS",
    "AUGMENTATION_TRAIN",
    "INPUT_PARAMS_VAL",
    "NEUTRAL_AUGMENTATION",
    "NO_AUGMENTATION",
    "RNG",
    "AugmentationParams",
    "BufferWorker",
    "ClassificationWorker",
    "ConfigurationError",
    "CrumpetsDataError",
    "CrumpetsDataModule",
    "FCNWorker",
    "ImageFolderDataset",
    "ImageWorker",
    "MixtureRNG",
    "MsgpackDataset",
    "NoRNG",
    "SaliencyWorker",
    "SampleError",
    "SegmentationWorker",
    "ShardedDataset",
    "TorchTurboDataLoader",
    "TurboDataLoader",
    "WindowShuffledShards",
    "Worker",
    "WorkerDiedError",
    "WorkerError",
    "add_blur",
    "add_gamma",
    "add_noise_other",
    "add_noise_rgb",
    "apply_pixel_ops",
    "augmentation_from_records",
    "augmentation_to_records",
    "calc_scale_ratio",
    "check_source",
    "decode_image",
    "human2gamma",
    "make_buffer_spec",
    "make_fill_value",
    "make_transform",
    "no_augmentation",
    "open_source",
    "pack_sample",
    "randomize_image",
    "rotate_and_resize",
    "unpack_sample",
    "write_msgpack",
]
#: crumpets data names (crumpets.broker, .dataloader, .shm) with no direct port -> what replaces them.
NO_PORT = {
    "make_bufferspec": "it is called make_buffer_spec here (from crumpets_lightning.data import make_buffer_spec).",
    "make_buffer": "workers write into the loader's shared-memory slots; declare buffers with "
    "BufferWorker.add_buffer(key, (shape, dtype[, fill])) or make_buffer_spec.",
    "BufferManager": "the loader allocates the batch buffers itself: TurboDataLoader(shared_memory=N) sets the "
    "number of shared-memory slots (False: copies over ZeroMQ).",
    "SharedBufferManager": "the loader allocates the batch buffers itself: TurboDataLoader(shared_memory=N).",
    "DummyBufferManager": "TurboDataLoader(shared_memory=False) sends batches over ZeroMQ instead of shared memory.",
    "shared_array": "the loader's shared memory is internal: TurboDataLoader(shared_memory=N) sets its slots.",
    "Consumer": "the ZeroMQ plumbing is internal to TurboDataLoader: iterate the loader (or use "
    "CrumpetsDataModule) instead.",
    "Producer": "the ZeroMQ plumbing is internal to TurboDataLoader: pass the samples as its `iterable`.",
    "Proxy": "the ZeroMQ plumbing is internal to TurboDataLoader.",
    "Slicer": "TurboDataLoader(iterable, ..., length=N) cuts a stream into epochs itself.",
}

if not TYPE_CHECKING:  # type checkers see only the names imported above, so a typo is an error
    __getattr__ = lazy_getattr(__name__, _NAMES, NO_PORT)


def __dir__() -> list[str]:
    return __all__
