"""``CrumpetsDataModule``: the crumpets loader as a ``LightningDataModule``.

Each ``*_dataloader()`` returns a :class:`~crumpets_lightning.data.loader.steps.StepLoader`: one batch dict
per Lightning step, straight from the loader's epoch plan (``len()`` comes from the plan).

The DataModule follows the rules Lightning imposes on custom loaders (SPEC section 3):

* nothing starts before ``setup()`` (it is pickled under ``ddp_spawn``), and ``iter()`` starts nothing
  either; worker processes start at the first batch;
* every ``iter()`` of a loader is a full epoch of exactly ``len()`` steps, also after an abandoned iterator
  (sanity check, ``limit_*_batches``, early stopping);
* shards come from ``trainer.global_rank`` / ``trainer.world_size`` read in ``setup()``; every rank gets the
  same number of steps; evaluation loaders pad shards with repeats instead of dropping, marked
  ``batch["padding"]`` so that the model can leave them out (exact evaluation under DDP);
* the training loader is stateful: Lightning stores its ``state_dict()`` in checkpoints and resuming
  mid-epoch continues with exactly the batches an uninterrupted run would have produced. Lightning's
  fetcher only prefetches a batch ahead for loaders *without* ``len()``; ours have one, so when a
  checkpoint is written the loader has handed out exactly the batches that were trained on;
* loaders are stopped in ``teardown()``, in ``on_exception()`` (Lightning skips ``teardown`` on errors), and
  at interpreter exit as a last resort.
"""

from __future__ import annotations

import os
import pickle
import weakref
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import numpy as np
from lightning.pytorch.utilities import rank_zero_info
from typing_extensions import override

from crumpets_lightning.data._checks import check_bool, check_int, check_seconds, default_nworkers
from crumpets_lightning.data.augment.rng import RNG
from crumpets_lightning.data.errors import ConfigurationError
from crumpets_lightning.data.loader.steps import StepLoader
from crumpets_lightning.data.workers.base import Worker

__all__ = ["CrumpetsDataModule"]

#: A data source: a list of shard files, a path, glob or URL (msgpack file or image folder), or a random-access
#: sequence of samples. ``list[str]`` comes first so that LightningCLI also writes a YAML list of shards back
#: (``--print_config``) as a list, not as the text of one.
Source = list[str] | str | Path | Sequence[Any]

_STAGES = ("train", "val", "test", "predict")
_STAGE_SOURCES = {"fit": ("train", "val"), "validate": ("val",), "test": ("test",), "predict": ("predict",)}


def _stop_loaders(loaders: dict[str, StepLoader]) -> None:
    for loader in list(loaders.values()):
        loader.stop()


class CrumpetsDataModule(pl.LightningDataModule):
    """Image data through the crumpets loader (ZeroMQ + shared memory workers) for a Lightning ``Trainer``.

    Each source is a path (a msgpack file of samples, an image folder ``class_name/*.jpg``, or what else
    :func:`~crumpets_lightning.data.sources.open_source` accepts) or a random-access sequence of samples
    (dicts or msgpack bytes). Path sources are checked when the DataModule is built. With ``worker=None``
    every sample is decoded and augmented by a ``ClassificationWorker`` into a ``channels x image_size`` uint8
    image and a ``[1]`` int64 label: training draws random augmentation from ``train_rng``; evaluation
    (val/test/predict) uses the fixed ``val_params`` and no randomness.

    Evaluation loaders never shuffle or drop samples; under DDP the shards are padded with repeats so that
    every rank runs the same number of steps, and the repeated rows are marked ``batch["padding"]`` so that
    ``CrumpetsModule`` leaves them out of losses, metrics and predictions. Training loaders shuffle per epoch
    from ``seed`` and, with ``drop_last``, drop the samples that do not fill a whole batch on every rank.

    With ``num_mini_batches > 1`` every batch of ``batch_size`` samples becomes ``num_mini_batches`` steps;
    the Trainer must accumulate their gradients: ``Trainer(accumulate_grad_batches=num_mini_batches)``.

    Lightning's tools work as with a torch ``DataLoader``: ``Tuner.scale_batch_size`` (``batch_size`` is
    capped at the training samples per rank once the source is open), ``Tuner.lr_find``,
    ``overfit_batches`` (the first batches, in order, without augmentation, every epoch) and
    ``reload_dataloaders_every_n_epochs``. A loader is rebuilt whenever a setting it depends on changed.

    Example::

        datamodule = CrumpetsDataModule("train.msgpack", "val.msgpack", batch_size=64, image_size=224)
        trainer = Trainer(max_epochs=10)
        trainer.fit(model, datamodule=datamodule)

    Args:
        train: training samples: path to a msgpack file or image folder, or a sequence of samples.
        val: validation samples (same kinds as ``train``).
        test: test samples (same kinds as ``train``).
        predict: samples to predict (same kinds as ``train``).
        batch_size: samples per crumpets batch on each rank; split into ``num_mini_batches`` steps.
        nworkers: worker processes per loader; ``None`` shares the usable CPUs among the local ranks.
        image_size: output image size: an int for a square, or (height, width) in pixels.
        channels: output image channels: 3 for RGB, 1 for gray.
        worker: a custom worker for every stage instead of the default ``ClassificationWorker``.
        train_rng: random augmentation for training (an ``RNG`` such as ``MixtureRNG``); ``None`` means the
            ``AUGMENTATION_TRAIN`` preset; use ``NoRNG`` for none.
        val_params: fixed augmentation parameters for evaluation; ``None`` means the ``INPUT_PARAMS_VAL``
            preset.
        seed: seed of the shuffle order and of every sample's augmentation (same seed, same batches).
        shuffle: shuffle the training samples every epoch.
        shuffle_window: for sharded training sources: shuffle the shard order, then the samples within a
            window of this many (reads stay close together); ``None`` shuffles all samples globally.
        drop_last: drop the last incomplete training batch.
        num_mini_batches: split every training batch into this many steps (``batch_size`` must be divisible
            by it; set ``Trainer(accumulate_grad_batches=num_mini_batches)``); evaluation steps have
            ``batch_size // num_mini_batches`` samples too.
        shared_memory: pass batches through shared memory: ``True`` for the default number of slots, an int
            for that many slots, ``False`` to send them through sockets.
        timeout: seconds without progress from the workers before the loader raises.
        pin_memory: copy batches into pinned host memory (faster transfers to a GPU; ignored without CUDA).
        gpu_augmentation: leave pixel augmentations (gamma, contrast, noise, blur) to a GPU ``Randomizer``
            (the model needs ``randomizer=Randomizer()``); the workers only record their parameters.
        skip_bad_samples: drop samples that fail to decode (counted, with a warning) instead of raising.

    Raises:
        TypeError: an argument has the wrong type (the message names it and what it accepts).
        ValueError: an argument is out of range, or a path source is not a readable data source.
        FileNotFoundError: a path source does not exist.
    """

    def __init__(
        self,
        train: Source | None = None,
        val: Source | None = None,
        test: Source | None = None,
        predict: Source | None = None,
        *,
        batch_size: int = 64,
        nworkers: int | None = None,
        image_size: int | tuple[int, int] = (224, 224),
        channels: int = 3,
        worker: Worker | None = None,
        train_rng: RNG | None = None,
        val_params: dict[str, Any] | None = None,
        seed: int = 0,
        shuffle: bool = True,
        shuffle_window: int | None = None,
        drop_last: bool = True,
        num_mini_batches: int = 1,
        shared_memory: bool | int = True,
        timeout: float = 120.0,
        pin_memory: bool = False,
        gpu_augmentation: bool = False,
        skip_bad_samples: bool = False,
    ) -> None:
        super().__init__()
        self.sources: dict[str, Source | None] = {"train": train, "val": val, "test": test, "predict": predict}
        for stage, source in self.sources.items():
            _check_source(stage, source)
        self.rank = 0
        self.world_size = 1
        self.local_world_size = 1
        self.datasets: dict[str, Sequence[Any]] = {}
        self.num_mini_batches = check_int("num_mini_batches", num_mini_batches, 1, accepts="a positive int")
        self._batch_size = check_int("batch_size", batch_size, 1, accepts=_BATCH_ACCEPTS)
        _check_divisible(self._batch_size, self.num_mini_batches)  # later values: rounded by the setter
        self.nworkers = None if nworkers is None else check_int("nworkers", nworkers, 1, accepts=_NWORKERS_ACCEPTS)
        self.image_size = _check_image_size(image_size)
        if isinstance(channels, bool) or channels not in (1, 3):
            raise ValueError(
                f"Expected argument `channels` to be 1 (gray) or 3 (RGB) but got {channels!r}; "
                "set channels: 3 for colour images or channels: 1 for gray"
            )
        self.channels = int(channels)
        if worker is not None and not isinstance(worker, Worker):
            raise TypeError(
                f"Expected argument `worker` to be a crumpets_lightning Worker instance (e.g. ClassificationWorker "
                f"or your BufferWorker subclass) or None (the default ClassificationWorker) but got "
                f"{type(worker).__name__}"
            )
        self.worker = worker
        if train_rng is not None and not isinstance(train_rng, RNG):
            raise TypeError(
                f"Expected argument `train_rng` to be an RNG (e.g. MixtureRNG(...), or NoRNG() for no augmentation) "
                f"or None (the AUGMENTATION_TRAIN preset) but got {type(train_rng).__name__}; in YAML: "
                "train_rng: {class_path: crumpets_lightning.data.MixtureRNG, init_args: {...}}"
            )
        self.train_rng = train_rng
        self.val_params = _check_val_params(val_params)
        self.seed = check_int("seed", seed, 0, accepts="an int in [0, 2**63) (the same seed gives the same batches)")
        if self.seed >= 2**63:
            raise ValueError(f"Expected argument `seed` to be an int in [0, 2**63) but got {seed!r}")
        self.shuffle = check_bool("shuffle", shuffle)
        self.shuffle_window = _check_shuffle_window(shuffle_window, train)
        self.drop_last = check_bool("drop_last", drop_last)
        if isinstance(shared_memory, bool):
            self.shared_memory: bool | int = shared_memory
        elif isinstance(shared_memory, (int, np.integer)) and shared_memory >= 2:
            self.shared_memory = int(shared_memory)
        else:
            raise ValueError(
                f"Expected argument `shared_memory` to be true (the default number of slots), false (send batches "
                f"through sockets) or an int >= 2 (that many slots) but got {shared_memory!r}"
            )
        self.timeout = check_seconds("timeout", timeout, ", e.g. timeout: 120")
        self.pin_memory = check_bool("pin_memory", pin_memory)
        self.gpu_augmentation = check_bool("gpu_augmentation", gpu_augmentation)
        self.skip_bad_samples = check_bool("skip_bad_samples", skip_bad_samples)
        self._loaders: dict[str, StepLoader] = {}
        self._loader_settings: dict[str, tuple[Any, ...]] = {}
        self._finalizer: weakref.finalize | None = None

    # -- settings ----------------------------------------------------------------------------------------

    @property
    def batch_size(self) -> int:
        """Samples per batch on each rank (Lightning's ``Tuner.scale_batch_size`` sets it between trials).

        Set after construction (the Tuner does), a value that is not a multiple of ``num_mini_batches`` is
        rounded down to one (the Tuner's binary search tries any size); once the training source is open
        (after ``setup("fit")``), a larger value is capped at the training samples per rank (a larger batch
        cannot be filled), rounded down to a multiple of ``num_mini_batches``.
        """
        return self._batch_size

    @batch_size.setter
    def batch_size(self, value: int) -> None:
        value = check_int("batch_size", value, 1, accepts=_BATCH_ACCEPTS)
        if value % self.num_mini_batches and value > self.num_mini_batches:
            rounded = value - value % self.num_mini_batches
            rank_zero_info(
                f"CrumpetsDataModule: batch_size {value} is no multiple of num_mini_batches={self.num_mini_batches}; "
                f"using batch_size {rounded}"
            )
            value = rounded
        _check_divisible(value, self.num_mini_batches)
        limit = self._train_samples_per_rank()
        if limit is not None and value > limit:
            capped = limit - limit % self.num_mini_batches
            if capped > 0:
                rank_zero_info(
                    f"CrumpetsDataModule: batch_size {value} is more than the {limit} training samples per rank; "
                    f"using batch_size {capped}"
                )
                value = capped
        self._batch_size = value

    def _train_samples_per_rank(self) -> int | None:
        """Training samples one rank sees per epoch (``None`` before the training source is open)."""
        dataset = self.datasets.get("train")
        if dataset is None:
            return None
        samples = len(dataset)
        return samples // self.world_size if self.drop_last else -(-samples // self.world_size)

    # -- pickling (ddp_spawn): never carry processes, sockets or open files ------------------------------

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_loaders"] = {}
        state["_loader_settings"] = {}
        state["_finalizer"] = None
        return state

    # -- Lightning hooks ---------------------------------------------------------------------------------

    @override
    def setup(self, stage: str) -> None:
        """Read the rank layout from the trainer, check the fit configuration and open the sources ``stage`` needs.

        Args:
            stage: ``"fit"``, ``"validate"``, ``"test"`` or ``"predict"``.

        Raises:
            ConfigurationError: (a ``ValueError``) ``num_mini_batches > 1`` without a matching
                ``accumulate_grad_batches``;
                ``gpu_augmentation=True`` with a model that has no ``randomizer``; ``batch_size`` larger
                than the training samples per rank with ``drop_last=True``; a needed source is missing.
        """
        trainer = self.trainer
        if trainer is not None:
            rank, world_size = int(trainer.global_rank), int(trainer.world_size)
            self.local_world_size = max(1, int(trainer.num_devices))
        else:
            rank, world_size = 0, 1
        if (rank, world_size) != (self.rank, self.world_size):
            self._stop_all()
            self.rank, self.world_size = rank, world_size
        if stage == "fit" and trainer is not None:
            self._check_fit_configuration(trainer)
        for name in _STAGE_SOURCES.get(stage, _STAGES):
            if stage == "fit" and name == "val" and self.sources["val"] is None:
                continue  # validation is optional while fitting
            self._open(name)
        if stage == "fit":
            self._check_batch_fits()

    @override
    def train_dataloader(self) -> StepLoader:
        """The training loader (shuffled from ``seed``, random augmentation, this rank's shard).

        Under ``Trainer(overfit_batches=...)`` it neither shuffles nor augments (evaluation parameters), so
        every epoch trains on the same pixels.
        """
        return self._loader("train")

    @override
    def val_dataloader(self) -> StepLoader | list[Any]:
        """The validation loader (fixed order, no random augmentation, no sample dropped).

        Without a ``val`` source this is an empty list, which tells Lightning to skip validation.
        """
        if self.sources["val"] is None:
            return []
        return self._loader("val")

    @override
    def test_dataloader(self) -> StepLoader:
        """The test loader (fixed order, no random augmentation, no sample dropped)."""
        return self._loader("test")

    @override
    def predict_dataloader(self) -> StepLoader:
        """The predict loader (fixed order, no random augmentation, no sample dropped)."""
        return self._loader("predict")

    @override
    def teardown(self, stage: str) -> None:
        """Stop every loader's worker processes and free their shared memory."""
        self._stop_all()

    @override
    def on_exception(self, exception: BaseException) -> None:
        """Stop every loader: Lightning skips ``teardown()`` when a run fails."""
        self._stop_all()

    def train_steps_per_epoch(self) -> int:
        """Training steps per epoch on this rank, without starting any process (a convenience for users).

        Returns:
            ``len(self.train_dataloader())``.
        """
        return len(self._loader("train"))

    # -- checks ------------------------------------------------------------------------------------------

    def _check_fit_configuration(self, trainer: Any) -> None:
        accumulate = getattr(trainer, "accumulate_grad_batches", 1)
        if self.num_mini_batches > 1 and accumulate != self.num_mini_batches:
            raise ConfigurationError(
                f"CrumpetsDataModule(num_mini_batches={self.num_mini_batches}) splits every batch of "
                f"{self.batch_size} samples into {self.num_mini_batches} steps, so gradients must be accumulated "
                f"over {self.num_mini_batches} steps, but the Trainer has accumulate_grad_batches={accumulate}; "
                f"pass Trainer(accumulate_grad_batches={self.num_mini_batches}) "
                f"(YAML: trainer.accumulate_grad_batches: {self.num_mini_batches})"
            )
        if self.gpu_augmentation:
            model = getattr(trainer, "lightning_module", None)
            if model is not None and getattr(model, "randomizer", None) is None:
                raise ConfigurationError(
                    f"CrumpetsDataModule(gpu_augmentation=True) leaves gamma, contrast, noise and blur to the "
                    f"model's Randomizer, but {type(model).__name__} has no `randomizer`, so training would run "
                    "without pixel augmentation; pass CrumpetsModule(..., randomizer=Randomizer()) (YAML: "
                    "model.init_args.randomizer: {class_path: crumpets_lightning.modules.Randomizer}), or set "
                    "gpu_augmentation=False to augment in the workers"
                )

    def _check_batch_fits(self) -> None:
        dataset = self.datasets["train"]
        samples = len(dataset)
        if samples == 0:
            raise ConfigurationError(f"The `train` source ({_describe(self.sources['train'])}) holds no samples")
        per_rank = samples // self.world_size
        if self.drop_last and self.batch_size > per_rank:
            ranks = f" over {self.world_size} ranks" if self.world_size > 1 else ""
            raise ConfigurationError(
                f"Expected `batch_size` ({self.batch_size}) to be at most the number of training samples per rank "
                f"({per_rank}: {samples} samples{ranks}): with drop_last=True no batch could be filled and "
                f"nothing would be trained; pass batch_size <= {per_rank} or drop_last=False"
            )

    # -- internals ---------------------------------------------------------------------------------------

    def _open(self, name: str) -> Sequence[Any]:
        from crumpets_lightning.data.sources import open_source

        if name not in self.datasets:
            source = self.sources[name]
            if source is None:
                raise ConfigurationError(
                    f"CrumpetsDataModule has no `{name}` source; pass {name}=<msgpack file, image folder or "
                    f"sequence of samples> (in YAML: data.{name})"
                )
            window = self.shuffle_window if name == "train" else None
            self.datasets[name] = open_source(source, shuffle_window=window)
        return self.datasets[name]

    def _overfitting(self) -> bool:
        return bool(getattr(self.trainer, "overfit_batches", 0))

    def _eval_params(self) -> dict[str, Any]:
        if self.val_params is not None:
            return dict(self.val_params)
        from crumpets_lightning.data.augment.presets import INPUT_PARAMS_VAL

        return dict(INPUT_PARAMS_VAL)

    def _make_worker(self, name: str, overfit: bool) -> Worker:
        if self.worker is not None:
            worker = self.worker.copy()
            if name == "train":
                worker.set_gpu_augmentation(self.gpu_augmentation and not overfit)
                if overfit and hasattr(worker, "image_rng"):
                    from crumpets_lightning.data.augment.rng import NoRNG

                    worker.image_rng = NoRNG()  # the worker's fixed parameters stay
            return worker
        from crumpets_lightning.data.workers.image import ClassificationWorker, ImageWorker

        image_spec = ((self.channels, *self.image_size), np.uint8)
        if name == "train" and not overfit:
            rng = self.train_rng
            if rng is None:
                from crumpets_lightning.data.augment.presets import AUGMENTATION_TRAIN

                rng = AUGMENTATION_TRAIN
            return ClassificationWorker(
                image_spec, ((1,), np.int64), image_rng=rng, gpu_augmentation=self.gpu_augmentation
            )
        if name == "predict":
            return ImageWorker(image_spec, image_params=self._eval_params())
        return ClassificationWorker(image_spec, ((1,), np.int64), image_params=self._eval_params())

    def _settings(self, name: str, overfit: bool) -> tuple[Any, ...]:
        """Everything a loader of ``name`` is built from: a loader is reused only while these stay equal."""
        return (
            self.batch_size,
            self.num_mini_batches,
            self.nworkers,
            self.local_world_size,
            self.image_size,
            self.channels,
            _fingerprint(self.worker),  # by content: a worker or RNG changed in place counts as changed
            _fingerprint(self.train_rng),
            repr(self.val_params),
            self.seed,
            self.shuffle,
            self.shuffle_window,
            self.drop_last,
            self.shared_memory,
            self.timeout,
            self.pin_memory,
            self.gpu_augmentation,
            self.skip_bad_samples,
            self.rank,
            self.world_size,
            id(self.datasets.get(name)),
            overfit,
        )

    def _loader(self, name: str) -> StepLoader:
        overfit = name == "train" and self._overfitting()
        dataset = self._open(name)
        settings = self._settings(name, overfit)
        cached = self._loaders.get(name)
        if cached is not None:
            if self._loader_settings.get(name) == settings:
                return cached
            cached.stop()  # a setting changed (e.g. the Tuner's batch_size): build anew
            del self._loaders[name]
        from crumpets_lightning.data.loader.torch_loader import TorchTurboDataLoader

        training = name == "train"
        loader = TorchTurboDataLoader(
            dataset,
            self.batch_size if training else self.batch_size // self.num_mini_batches,
            self._make_worker(name, overfit),
            nworkers=self.nworkers or default_nworkers(self.local_world_size),
            num_mini_batches=self.num_mini_batches if training else 1,
            shared_memory=self.shared_memory,
            seed=self.seed,
            shuffle=self.shuffle and training and not overfit,
            drop_last=self.drop_last and training,
            rank=self.rank,
            world_size=self.world_size,
            timeout=self.timeout,
            skip_bad_samples=self.skip_bad_samples,
            name=f"{name}-rank{self.rank}",
            device="cpu",
        )
        wrapped = StepLoader(loader, pin_memory=self.pin_memory)
        self._loaders[name] = wrapped
        self._loader_settings[name] = settings
        if self._finalizer is None:
            # Last resort at interpreter exit (or when the DataModule is collected) if nobody stopped them.
            self._finalizer = weakref.finalize(self, _stop_loaders, self._loaders)
        return wrapped

    def _stop_all(self) -> None:
        _stop_loaders(self._loaders)
        self._loaders.clear()
        self._loader_settings.clear()


_NWORKERS_ACCEPTS = "a positive int or None (share the usable CPUs among the local ranks)"
_BATCH_ACCEPTS = "a positive int (samples per batch on each rank)"


def _fingerprint(value: Any) -> object:
    """``value``'s pickled bytes (equal while its content is), or its identity when it cannot be pickled."""
    try:
        return pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
    except Exception:
        return id(value)


def _check_divisible(batch_size: int, num_mini_batches: int) -> None:
    if batch_size % num_mini_batches:
        raise ValueError(
            f"Expected argument `batch_size` ({batch_size}) to be divisible by `num_mini_batches` "
            f"({num_mini_batches}); pick a multiple of {num_mini_batches}"
        )


def _check_image_size(image_size: Any) -> tuple[int, int]:
    accepts = "an int (a square) or (height, width) of positive ints, e.g. image_size: 224 or image_size: [224, 160]"
    if isinstance(image_size, (int, np.integer)) and not isinstance(image_size, bool):
        side = check_int("image_size", image_size, 1, accepts=accepts)
        return side, side
    if isinstance(image_size, (str, bytes)) or not isinstance(image_size, Sequence) or len(image_size) != 2:
        raise ValueError(f"Expected argument `image_size` to be {accepts} but got {image_size!r}")
    height, width = (check_int("image_size", side, 1, accepts=accepts) for side in image_size)
    return height, width


def _check_val_params(val_params: Any) -> dict[str, Any] | None:
    if val_params is None:
        return None
    if not isinstance(val_params, Mapping):
        raise TypeError(
            f"Expected argument `val_params` to be a dict of fixed augmentation parameters (e.g. "
            f"{{scale_mode: shortest, scale: 1.0}}) or None (the INPUT_PARAMS_VAL preset) but got "
            f"{type(val_params).__name__}"
        )
    from crumpets_lightning.data.workers.image import ClassificationWorker

    try:  # the worker knows which parameters exist
        ClassificationWorker(((3, 8, 8), np.uint8), ((1,), np.int64), image_params=val_params)
    except (TypeError, ValueError) as error:
        raise ValueError(f"Argument `val_params` is not valid: {error}") from error
    return dict(val_params)


def _is_path_source(source: Any) -> bool:
    """A path, glob or URL, or a non-empty list of them (shards); not a sequence of samples."""
    if isinstance(source, (str, os.PathLike)):
        return True
    return (
        isinstance(source, (list, tuple))
        and len(source) > 0
        and all(isinstance(item, (str, os.PathLike)) for item in source)
    )


def _check_source(name: str, source: Any) -> None:
    """Check a source at construction (files recognised by content), naming the argument in any error."""
    if source is None:
        return
    if not _is_path_source(source) and (
        isinstance(source, (bytes, bytearray)) or not (hasattr(source, "__len__") and hasattr(source, "__getitem__"))
    ):
        raise TypeError(
            f"Expected argument `{name}` to be a path (msgpack file, image folder, glob or list of shards, URL) or "
            f"a random-access sequence of samples but got {type(source).__name__}"
        )
    from crumpets_lightning.data.sources import check_source

    try:
        check_source(source)
    except (FileNotFoundError, ValueError, TypeError) as error:
        raise type(error)(f"Argument `{name}`: {error}") from error


def _check_shuffle_window(shuffle_window: Any, train: Any) -> int | None:
    if shuffle_window is None:
        return None
    window = check_int(
        "shuffle_window", shuffle_window, 1, accepts="a positive number of samples, or None to shuffle globally"
    )
    if not _is_path_source(train) or (isinstance(train, (str, os.PathLike)) and os.path.isdir(train)):
        raise ValueError(
            f"Argument `shuffle_window` ({window}) applies to a `train` source of msgpack files (a file, a glob or a "
            f"list of shards), but `train` is {_describe(train)}; drop shuffle_window to shuffle globally"
        )
    return window


def _describe(source: Any) -> str:
    if isinstance(source, (str, os.PathLike)):
        kind = "the image folder" if os.path.isdir(source) else "the file"
        return f"{kind} {str(source)!r}"
    if source is None:
        return "not given"
    return f"a {type(source).__name__} of samples"
