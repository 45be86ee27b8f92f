"""``CrumpetsDataModule``: the crumpets loader as a ``LightningDataModule``, and the per-step loader it returns.

The DataModule follows the rules Lightning imposes on custom loaders (SPEC section 3):

* nothing starts before ``setup()`` (it is pickled under ``ddp_spawn``), and ``iter()`` starts nothing
  either; worker processes start at the first batch;
* every ``iter()`` of a loader is a full epoch of exactly ``len()`` steps, also after an abandoned iterator
  (sanity check, ``limit_*_batches``, early stopping);
* shards come from ``trainer.global_rank`` / ``trainer.world_size`` read in ``setup()``; every rank gets the
  same number of steps; evaluation loaders pad the last rank's shard with repeats instead of dropping;
* the training loader is stateful: Lightning stores its ``state_dict()`` in checkpoints and resuming
  mid-epoch continues with exactly the batches an uninterrupted run would have produced. Lightning's
  fetcher only prefetches a batch ahead for loaders *without* ``len()``; ours have one, so when a
  checkpoint is written the loader has handed out exactly the batches that were trained on;
* loaders are stopped in ``teardown()``, in ``on_exception()`` (Lightning skips ``teardown`` on errors), and
  at interpreter exit as a last resort.
"""

from __future__ import annotations

import os
import weakref
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import lightning.pytorch as pl
import numpy as np
import torch
from typing_extensions import override

from crumpets_lightning.data.augment.rng import RNG
from crumpets_lightning.data.workers.base import Worker

if TYPE_CHECKING:
    from crumpets_lightning.data.loader.torch_loader import TorchTurboDataLoader

__all__ = ["CrumpetsDataModule", "MiniBatchLoader"]

#: A data source: a path (msgpack file or image folder) or a random-access sequence of samples.
Source = str | Path | Sequence[Any]

_STAGES = ("train", "val", "test", "predict")
_STAGE_SOURCES = {"fit": ("train", "val"), "validate": ("val",), "test": ("test",), "predict": ("predict",)}


class MiniBatchLoader:
    """What each ``*_dataloader()`` of :class:`CrumpetsDataModule` returns: one batch dict per Lightning step.

    Wraps a :class:`~crumpets_lightning.data.loader.torch_loader.TorchTurboDataLoader` and flattens its crumpets
    mini-batches into consecutive steps, so a crumpets batch of ``batch_size`` samples split into
    ``num_mini_batches`` mini-batches becomes ``num_mini_batches`` steps (use gradient accumulation over
    ``num_mini_batches`` steps for one optimizer step per crumpets batch; ``CrumpetsModule`` sets it up).

    Each step yields a ``dict``: ``"image"`` (uint8 ``[B, C, H, W]``), ``"label"`` (``[B, 1]``),
    ``"augmentation"`` (float32 ``[B, 8]``) and whatever else the worker writes, as CPU tensors viewing
    shared memory (no copy); per-sample lists the worker appends stay lists.

    ``iter()`` starts nothing; the loader's processes start at the first ``next()``. Every ``iter()`` is a
    new epoch of exactly ``len()`` steps, also after an abandoned iterator. ``state_dict()`` /
    ``load_state_dict()`` let Lightning store the position in checkpoints and resume mid-epoch, also in the
    middle of a crumpets batch.

    Args:
        loader: the crumpets loader to wrap (not started).
        steps_per_epoch: the number of steps each epoch yields (``len()``).
        pin_memory: copy each batch's tensors into pinned (page-locked) host memory, which makes
            Lightning's non-blocking copies to a GPU faster (costs one copy on the CPU).
    """

    #: Lightning looks for a batch sampler next to ``sampler``; this loader has none.
    batch_sampler: None = None

    def __init__(self, loader: TorchTurboDataLoader, steps_per_epoch: int, pin_memory: bool = False) -> None:
        self.loader = loader
        self.steps_per_epoch = int(steps_per_epoch)
        self.pin_memory = bool(pin_memory)
        self.num_mini_batches = int(loader.num_mini_batches)
        # Position inside the current crumpets batch: mini-batches of it already yielded, and the loader
        # state from before it was fetched (needed to save a checkpoint taken in the middle of a batch).
        self._mini_batches_done = 0
        self._state_before_batch: dict[str, Any] | None = None
        self._resume_skip = 0

    @property
    def sampler(self) -> Any:
        """An object with ``set_epoch(epoch)`` (Lightning calls it at the start of every training epoch)."""
        return self.loader.sampler

    def __len__(self) -> int:
        return self.steps_per_epoch

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return self._epoch()

    def _epoch(self) -> Iterator[dict[str, Any]]:
        # A generator: nothing below runs until the first next(), so iter() starts no work.
        skip, self._resume_skip = self._resume_skip, 0
        track = self.num_mini_batches > 1
        self._mini_batches_done = 0
        self._state_before_batch = None
        batches = iter(self.loader)
        while True:
            state = self.loader.state_dict() if track else None
            try:
                _, mini_batches = next(batches)
            except StopIteration:
                return
            self._state_before_batch = state
            self._mini_batches_done = skip
            for mini_batch in mini_batches[skip:]:
                self._mini_batches_done += 1
                yield _pinned(mini_batch) if self.pin_memory else mini_batch
            skip = 0

    def state_dict(self) -> dict[str, Any]:
        """The position in the current epoch, for checkpoints.

        Returns:
            ``{"loader": <TurboDataLoader state>, "mini_batch": <mini-batches of the current batch done>}``.
        """
        if self._resume_skip:  # loaded but not iterated yet: the pending resume point
            return {"loader": self.loader.state_dict(), "mini_batch": self._resume_skip}
        if 0 < self._mini_batches_done < self.num_mini_batches and self._state_before_batch is not None:
            return {"loader": dict(self._state_before_batch), "mini_batch": self._mini_batches_done}
        return {"loader": self.loader.state_dict(), "mini_batch": 0}

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        """Continue from a :meth:`state_dict`: the next ``iter()`` yields only the rest of that epoch.

        Args:
            state_dict: a dict returned by :meth:`state_dict`.

        Raises:
            ValueError: if ``state_dict`` was not made by this class or does not match this loader.
        """
        if not isinstance(state_dict, Mapping) or "loader" not in state_dict:
            raise ValueError(
                f"Expected a state dict of MiniBatchLoader with keys 'loader' and 'mini_batch' but got "
                f"{state_dict!r}; was the checkpoint written with a different data loader?"
            )
        skip = int(state_dict.get("mini_batch", 0))
        if not 0 <= skip < self.num_mini_batches:
            raise ValueError(
                f"The checkpoint is {skip} mini-batches into a batch but this loader has num_mini_batches="
                f"{self.num_mini_batches}; resume with the num_mini_batches the checkpoint was written with"
            )
        self.loader.load_state_dict(dict(state_dict["loader"]))
        self._resume_skip = skip
        self._mini_batches_done = 0
        self._state_before_batch = None

    def stop(self) -> None:
        """Stop the loader's processes and free its shared memory (idempotent; it restarts when iterated)."""
        self.loader.stop()

    def __repr__(self) -> str:
        return f"{type(self).__name__}(steps_per_epoch={self.steps_per_epoch}, loader={self.loader!r})"


def _pinned(batch: dict[str, Any]) -> dict[str, Any]:
    return {key: value.pin_memory() if isinstance(value, torch.Tensor) else value for key, value in batch.items()}


def _stop_loaders(loaders: dict[str, MiniBatchLoader]) -> None:
    for loader in list(loaders.values()):
        loader.stop()


def _check_positive_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
        raise ValueError(f"Expected argument `{name}` to be a positive int but got {value!r}")
    return int(value)


class CrumpetsDataModule(pl.LightningDataModule):
    """Image data through the crumpets loader (ZeroMQ + shared memory workers) for a Lightning ``Trainer``.

    Each source is a path (a msgpack file of samples or an image folder ``class_name/*.jpg``) or a
    random-access sequence of samples (dicts or msgpack bytes). With ``worker=None`` every sample is decoded
    and augmented by a ``ClassificationWorker`` into a ``channels x image_size`` uint8 image and a ``[1]``
    int64 label: training draws random augmentation from ``train_rng``; evaluation (val/test/predict) uses
    the fixed ``val_params`` and no randomness.

    Evaluation loaders never shuffle or drop samples; under DDP the last rank's shard is padded with
    repeats of the first samples so that every rank runs the same number of steps (those few samples are
    evaluated twice). Training loaders shuffle per epoch from ``seed`` and, with ``drop_last``, drop the
    samples that do not fill a whole batch on every rank.

    Example::

        datamodule = CrumpetsDataModule("train.msgpack", "val.msgpack", batch_size=64, image_size=(224, 224))
        trainer = Trainer(max_epochs=10)
        trainer.fit(model, datamodule=datamodule)

    Args:
        train: training samples: path to a msgpack file or image folder, or a sequence of samples.
        val: validation samples (same kinds as ``train``).
        test: test samples (same kinds as ``train``).
        predict: samples to predict (same kinds as ``train``).
        batch_size: samples per crumpets batch (per rank); split into ``num_mini_batches`` steps.
        nworkers: worker processes per loader; ``None`` shares the usable CPUs among the local ranks.
        image_size: output image size as (height, width) in pixels.
        channels: output image channels: 3 for RGB, 1 for gray.
        worker: a custom worker for every stage instead of the default ``ClassificationWorker``.
        train_rng: random augmentation for training (an ``RNG`` such as ``MixtureRNG``); ``None`` means the
            ``AUGMENTATION_TRAIN`` preset; use ``NoRNG`` for none.
        val_params: fixed augmentation parameters for evaluation; ``None`` means the ``INPUT_PARAMS_VAL``
            preset.
        seed: seed of the shuffle order and of every sample's augmentation (same seed, same batches).
        shuffle: shuffle the training samples every epoch.
        drop_last: drop the last incomplete training batch.
        num_mini_batches: split every training batch into this many steps (``batch_size`` must be divisible
            by it); evaluation steps have ``batch_size // num_mini_batches`` samples too.
        shared_memory: pass batches through shared memory: ``True`` for the default number of slots, an int
            for that many slots, ``False`` to send them through sockets.
        timeout: seconds without progress from the workers before the loader raises.
        pin_memory: copy batches into pinned host memory (faster transfers to a GPU; ignored without CUDA).
        gpu_augmentation: leave pixel augmentations (gamma, contrast, noise, blur) to a GPU ``Randomizer``
            (set ``randomizer`` on the model); the workers only record their parameters.
        skip_bad_samples: drop samples that fail to decode (counted, with a warning) instead of raising.
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
        image_size: tuple[int, int] = (224, 224),
        channels: int = 3,
        worker: Worker | None = None,
        train_rng: RNG | None = None,
        val_params: dict[str, Any] | None = None,
        seed: int = 0,
        shuffle: bool = True,
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
            if source is not None and not isinstance(source, (str, os.PathLike, Sequence)):
                raise TypeError(
                    f"Expected argument `{stage}` to be a path (msgpack file or image folder) or a sequence of "
                    f"samples but got {type(source).__name__}"
                )
        self.batch_size = _check_positive_int("batch_size", batch_size)
        self.num_mini_batches = _check_positive_int("num_mini_batches", num_mini_batches)
        if self.batch_size % self.num_mini_batches:
            raise ValueError(
                f"Expected argument `batch_size` ({batch_size}) to be divisible by `num_mini_batches` "
                f"({num_mini_batches})"
            )
        self.nworkers = None if nworkers is None else _check_positive_int("nworkers", nworkers)
        if len(image_size) != 2:
            raise ValueError(f"Expected argument `image_size` to be (height, width) but got {image_size!r}")
        height, width = (_check_positive_int("image_size", side) for side in image_size)
        self.image_size = (height, width)
        if channels not in (1, 3):
            raise ValueError(f"Expected argument `channels` to be 1 (gray) or 3 (RGB) but got {channels!r}")
        self.channels = int(channels)
        if worker is not None and not isinstance(worker, Worker):
            raise TypeError(
                f"Expected argument `worker` to be a crumpets_lightning Worker but got {type(worker).__name__}"
            )
        self.worker = worker
        self.train_rng = train_rng
        self.val_params = val_params
        self.seed = int(seed)
        self.shuffle = bool(shuffle)
        self.drop_last = bool(drop_last)
        if not isinstance(shared_memory, bool) and (not isinstance(shared_memory, int) or shared_memory < 2):
            raise ValueError(f"Expected argument `shared_memory` to be a bool or an int >= 2 but got {shared_memory!r}")
        self.shared_memory = shared_memory
        if not timeout > 0:
            raise ValueError(f"Expected argument `timeout` to be a positive number of seconds but got {timeout!r}")
        self.timeout = float(timeout)
        self.pin_memory = bool(pin_memory)
        self.gpu_augmentation = bool(gpu_augmentation)
        self.skip_bad_samples = bool(skip_bad_samples)
        self.rank = 0
        self.world_size = 1
        self.local_world_size = 1
        self.datasets: dict[str, Sequence[Any]] = {}
        self._loaders: dict[str, MiniBatchLoader] = {}
        self._finalizer: weakref.finalize | None = None

    # -- pickling (ddp_spawn): never carry processes, sockets or open files ------------------------------

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_loaders"] = {}
        state["_finalizer"] = None
        return state

    # -- Lightning hooks ---------------------------------------------------------------------------------

    @override
    def setup(self, stage: str) -> None:
        """Read the rank layout from the trainer and open the sources ``stage`` needs.

        Args:
            stage: ``"fit"``, ``"validate"``, ``"test"`` or ``"predict"``.
        """
        trainer = self.trainer
        if trainer is not None:
            rank, world_size = int(trainer.global_rank), int(trainer.world_size)
            self.local_world_size = max(1, int(trainer.num_devices))
        else:
            rank, world_size = 0, 1
        if (rank, world_size) != (self.rank, self.world_size):
            self._stop_all(forget=True)
            self.rank, self.world_size = rank, world_size
        for name in _STAGE_SOURCES.get(stage, _STAGES):
            if stage == "fit" and name == "val" and self.sources["val"] is None:
                continue  # validation is optional while fitting
            self._open(name)

    @override
    def train_dataloader(self) -> MiniBatchLoader:
        """The training loader (shuffled from ``seed``, random augmentation, this rank's shard)."""
        return self._loader("train")

    @override
    def val_dataloader(self) -> MiniBatchLoader | list[Any]:
        """The validation loader (fixed order, no random augmentation, no sample dropped).

        Without a ``val`` source this is an empty list, which tells Lightning to skip validation.
        """
        if self.sources["val"] is None:
            return []
        return self._loader("val")

    @override
    def test_dataloader(self) -> MiniBatchLoader:
        """The test loader (fixed order, no random augmentation, no sample dropped)."""
        return self._loader("test")

    @override
    def predict_dataloader(self) -> MiniBatchLoader:
        """The predict loader (fixed order, no random augmentation, no sample dropped)."""
        return self._loader("predict")

    @override
    def teardown(self, stage: str) -> None:
        """Stop every loader's worker processes and free their shared memory."""
        self._stop_all(forget=True)

    @override
    def on_exception(self, exception: BaseException) -> None:
        """Stop every loader: Lightning skips ``teardown()`` when a run fails."""
        self._stop_all(forget=True)

    def train_steps_per_epoch(self) -> int:
        """Training steps per epoch on this rank, without starting any process.

        ``CrumpetsModule`` uses it to size per-step LR policies (asking the trainer for
        ``estimated_stepping_batches`` builds the loaders early and can lose the resume state).

        Returns:
            ``len(self.train_dataloader())``.
        """
        return len(self._loader("train"))

    # -- internals ---------------------------------------------------------------------------------------

    def _open(self, name: str) -> Sequence[Any]:
        from crumpets_lightning.data.sources.datasets import open_source

        if name not in self.datasets:
            source = self.sources[name]
            if source is None:
                raise ValueError(
                    f"CrumpetsDataModule has no `{name}` source; pass {name}=<msgpack file, image folder or "
                    f"sequence of samples> (in YAML: data.{name})"
                )
            self.datasets[name] = open_source(source)
        return self.datasets[name]

    def _make_worker(self, name: str) -> Worker:
        if self.worker is not None:
            worker = self.worker.copy()
            if name == "train":
                worker.set_gpu_augmentation(self.gpu_augmentation)
            return worker
        from crumpets_lightning.data.workers.image import ClassificationWorker, ImageWorker

        image_spec = ((self.channels, *self.image_size), np.uint8)
        if name == "train":
            rng = self.train_rng
            if rng is None:
                from crumpets_lightning.data.augment.presets import AUGMENTATION_TRAIN

                rng = AUGMENTATION_TRAIN
            return ClassificationWorker(
                image_spec, ((1,), np.int64), image_rng=rng, gpu_augmentation=self.gpu_augmentation
            )
        params = self.val_params
        if params is None:
            from crumpets_lightning.data.augment.presets import INPUT_PARAMS_VAL

            params = dict(INPUT_PARAMS_VAL)
        if name == "predict":
            return ImageWorker(image_spec, image_params=params)
        return ClassificationWorker(image_spec, ((1,), np.int64), image_params=params)

    def _default_nworkers(self) -> int:
        try:
            cpus = len(os.sched_getaffinity(0))
        except AttributeError:  # pragma: no cover - not Linux
            cpus = os.cpu_count() or 1
        return max(1, cpus // self.local_world_size)

    def _loader(self, name: str) -> MiniBatchLoader:
        if name in self._loaders:
            return self._loaders[name]
        from crumpets_lightning.data.loader.torch_loader import TorchTurboDataLoader

        dataset = self._open(name)
        training = name == "train"
        loader = TorchTurboDataLoader(
            dataset,
            self.batch_size if training else self.batch_size // self.num_mini_batches,
            self._make_worker(name),
            nworkers=self.nworkers or self._default_nworkers(),
            num_mini_batches=self.num_mini_batches if training else 1,
            shared_memory=self.shared_memory,
            seed=self.seed,
            shuffle=self.shuffle and training,
            drop_last=self.drop_last and training,
            rank=self.rank,
            world_size=self.world_size,
            timeout=self.timeout,
            skip_bad_samples=self.skip_bad_samples,
            name=f"{name}-rank{self.rank}",
            device="cpu",
        )
        steps = self._steps_per_epoch(loader, len(dataset), training)
        wrapped = MiniBatchLoader(loader, steps, pin_memory=self.pin_memory and torch.cuda.is_available())
        self._loaders[name] = wrapped
        if self._finalizer is None:
            # Last resort at interpreter exit (or when the DataModule is collected) if nobody stopped them.
            self._finalizer = weakref.finalize(self, _stop_loaders, self._loaders)
        return wrapped

    def _steps_per_epoch(self, loader: TorchTurboDataLoader, num_samples: int, training: bool) -> int:
        batches = len(loader)
        mini_batches = loader.num_mini_batches
        if mini_batches == 1 or (training and self.drop_last):
            return batches * mini_batches
        # The last, short batch yields only its non-empty mini-batches.
        per_rank = -(-num_samples // self.world_size)
        last_rows = per_rank - (batches - 1) * loader.batch_size
        mini_size = loader.batch_size // mini_batches
        return (batches - 1) * mini_batches + -(-last_rows // mini_size)

    def _stop_all(self, forget: bool) -> None:
        _stop_loaders(self._loaders)
        if forget:
            self._loaders.clear()
