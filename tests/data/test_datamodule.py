"""CrumpetsDataModule against the Lightning rules: lazy start, full epochs, sharding, cleanup on every exit path."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import cv2
import lightning.pytorch as pl
import numpy as np
import pytest
import torch
from lightning.pytorch.callbacks import Callback, EarlyStopping
from torch import nn

from crumpets_lightning.data.augment.rng import NoRNG
from crumpets_lightning.data.datamodule import CrumpetsDataModule
from crumpets_lightning.data.loader.steps import StepLoader
from crumpets_lightning.data.sources import write_msgpack
from crumpets_lightning.data.workers.base import BufferWorker
from tests.conftest import descendants

SIZE = 16


def make_samples(n: int, seed: int = 0) -> list[dict[str, Any]]:
    """``n`` random 16x16 RGB PNG samples whose label is their index (so labels identify samples)."""
    rng = np.random.default_rng(seed)
    samples = []
    for i in range(n):
        pixels = rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)
        ok, data = cv2.imencode(".png", pixels)
        assert ok
        samples.append({"key": f"s{i:03d}", "image": data.tobytes(), "label": i})
    return samples


def make_datamodule(train: Any = None, val: Any = None, **kwargs: Any) -> CrumpetsDataModule:
    kwargs.setdefault("batch_size", 4)
    kwargs.setdefault("nworkers", 1)
    kwargs.setdefault("image_size", (SIZE, SIZE))
    kwargs.setdefault("train_rng", NoRNG())
    kwargs.setdefault("timeout", 30.0)
    return CrumpetsDataModule(train, val, **kwargs)


def labels_of(batch: dict[str, Any]) -> list[int]:
    return batch["label"].reshape(-1).tolist()


def flat(batches: Any) -> list[int]:
    """Labels of consecutive batches (dicts or label lists) as one list."""
    return [label for batch in batches for label in (labels_of(batch) if isinstance(batch, dict) else batch)]


def _is_resource_tracker(pid: int) -> bool:
    """multiprocessing's resource tracker (started by ddp_spawn tests) lives as long as pytest: not ours."""
    try:
        return b"resource_tracker" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


def wait_for_no_children(timeout: float = 5.0) -> dict[int, str]:
    """Wait until no loader process is left; return those still alive after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        alive = {p: s for p, s in descendants().items() if s != "Z" and not _is_resource_tracker(p)}
        if not alive or time.monotonic() > deadline:
            return alive
        time.sleep(0.05)


class TinyModel(pl.LightningModule):
    """A linear model over the flattened image; ``fail_at_step`` makes ``training_step`` raise."""

    def __init__(self, fail_at_step: int | None = None, lr: float = 0.01) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.layer = nn.Linear(3 * SIZE * SIZE, 4)
        self.fail_at_step = fail_at_step
        self.lr = lr

    def _loss(self, batch: dict[str, Any]) -> torch.Tensor:
        x = batch["image"].float().flatten(1) / 255.0
        return self.layer(x).pow(2).mean()

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        if self.fail_at_step is not None and self.global_step == self.fail_at_step:
            raise RuntimeError("boom in training_step")
        return self._loss(batch)

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self.log("val_loss", self._loss(batch), batch_size=batch["image"].shape[0], sync_dist=True)

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self.log("test_loss", self._loss(batch), batch_size=batch["image"].shape[0])

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=self.lr)


class BatchRecorder(Callback):
    """Records the labels of every training and validation batch, per validation run."""

    def __init__(self) -> None:
        self.train: list[list[int]] = []
        self.val_runs: list[list[list[int]]] = []

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: Any, batch: Any, batch_idx: int) -> None:
        self.train.append(labels_of(batch))

    def on_validation_epoch_start(self, trainer: pl.Trainer, pl_module: Any) -> None:
        self.val_runs.append([])

    def on_validation_batch_start(self, trainer: pl.Trainer, pl_module: Any, batch: Any, *args: Any) -> None:
        self.val_runs[-1].append(labels_of(batch))


def make_trainer(**kwargs: Any) -> pl.Trainer:
    kwargs.setdefault("accelerator", "cpu")
    kwargs.setdefault("devices", 1)
    kwargs.setdefault("logger", False)
    kwargs.setdefault("enable_checkpointing", False)
    kwargs.setdefault("enable_progress_bar", False)
    kwargs.setdefault("enable_model_summary", False)
    return pl.Trainer(**kwargs)


def test_nothing_starts_before_the_first_batch_and_the_datamodule_pickles() -> None:
    dm = make_datamodule(make_samples(12), make_samples(6))
    restored = pickle.loads(pickle.dumps(dm))
    assert restored.batch_size == 4 and restored.image_size == (SIZE, SIZE)
    dm.setup("fit")
    loader = dm.train_dataloader()
    iterator = iter(loader)  # Lightning probes with iter(): must start nothing
    assert dm.train_steps_per_epoch() == len(loader) == 3
    assert wait_for_no_children(timeout=0) == {}
    pickle.loads(pickle.dumps(dm))  # live loaders are not pickled along
    first = next(iterator)
    assert wait_for_no_children(timeout=0) != {}
    assert first["image"].shape == (4, 3, SIZE, SIZE)
    dm.teardown("fit")
    assert wait_for_no_children() == {}


def test_batches_have_the_documented_shapes_and_cover_the_data() -> None:
    samples = make_samples(10)
    dm = make_datamodule(samples, samples, seed=3)
    dm.setup("fit")
    try:
        train = dm.train_dataloader()
        assert isinstance(train, StepLoader)
        assert train.batch_sampler is None and callable(train.sampler.set_epoch)
        batches = list(train)
        assert len(batches) == len(train) == 2  # 10 samples, batch 4, drop_last
        for batch in batches:
            assert batch["image"].dtype == torch.uint8 and batch["image"].shape == (4, 3, SIZE, SIZE)
            assert batch["label"].dtype == torch.int64 and batch["label"].shape == (4, 1)
            assert batch["augmentation"].shape[0] == 4
        seen = flat(batches)
        assert len(set(seen)) == 8 and set(seen) <= set(range(10))
        assert seen != sorted(seen)  # shuffled

        val = dm.val_dataloader()
        assert isinstance(val, StepLoader)
        val_batches = list(val)
        assert len(val_batches) == len(val) == 3  # nothing dropped: 4 + 4 + 2
        assert flat(val_batches) == list(range(10))  # in order
        # without augmentation the pixels are the decoded image (same size in and out)
        for batch in val_batches:
            for row, label in zip(batch["image"], labels_of(batch)):
                expected = cv2.imdecode(np.frombuffer(samples[label]["image"], np.uint8), cv2.IMREAD_COLOR)
                np.testing.assert_array_equal(row.numpy(), expected[:, :, ::-1].transpose(2, 0, 1))
    finally:
        dm.teardown("fit")


def test_every_iter_is_a_full_epoch_even_after_an_abandoned_one() -> None:
    dm = make_datamodule(make_samples(12))
    dm.setup("fit")
    try:
        loader = dm.train_dataloader()
        abandoned = iter(loader)
        next(abandoned)
        epochs = [[labels_of(b) for b in loader] for _ in range(2)]
        assert [len(e) for e in epochs] == [3, 3]
        assert all(sorted(flat(e)) == list(range(12)) for e in epochs)
        assert epochs[0] != epochs[1]  # a new shuffle every epoch
    finally:
        dm.teardown("fit")


def test_mini_batches_are_consecutive_steps_of_the_same_batches() -> None:
    samples = make_samples(16)
    whole, split = make_datamodule(samples, batch_size=8), make_datamodule(samples, batch_size=8, num_mini_batches=2)
    whole.setup("fit")
    split.setup("fit")
    try:
        batches = [labels_of(b) for b in whole.train_dataloader()]
        loader = split.train_dataloader()
        steps = [labels_of(b) for b in loader]
        assert len(loader) == len(steps) == 4 == 2 * len(batches)
        assert all(len(step) == 4 for step in steps)
        assert [steps[0] + steps[1], steps[2] + steps[3]] == batches
    finally:
        whole.teardown("fit")
        split.teardown("fit")


def test_ranks_get_disjoint_equal_shards_and_evaluation_pads_with_repeats() -> None:
    train, val = make_samples(18), make_samples(7)
    seen: dict[str, list[list[int]]] = {"train": [], "val": []}
    lengths = set()
    for rank in range(2):
        dm = make_datamodule(train, val, seed=5)
        dm.trainer = SimpleNamespace(global_rank=rank, world_size=2, num_devices=2)  # what setup() reads
        dm.setup("fit")
        try:
            for name, loader in (("train", dm.train_dataloader()), ("val", dm.val_dataloader())):
                labels = flat(loader)
                seen[name].append(labels)
                lengths.add((name, len(loader)))
        finally:
            dm.teardown("fit")
    assert lengths == {("train", 2), ("val", 1)}
    assert not set(seen["train"][0]) & set(seen["train"][1])
    assert len(seen["train"][0]) == len(seen["train"][1]) == 8
    # 7 validation samples over 2 ranks: 4 each, one repeated, every sample evaluated
    assert len(seen["val"][0]) == len(seen["val"][1]) == 4
    assert sorted(set(seen["val"][0]) | set(seen["val"][1])) == list(range(7))


def test_path_sources_msgpack_file_and_image_folder(tmp_path: Path) -> None:
    samples = make_samples(8)
    path = tmp_path / "train.msgpack"
    write_msgpack(samples, path)
    folder = tmp_path / "folder"
    for sample in samples[:6]:
        (folder / f"class{sample['label'] % 2}").mkdir(parents=True, exist_ok=True)
        (folder / f"class{sample['label'] % 2}" / f"{sample['key']}.png").write_bytes(sample["image"])
    dm = make_datamodule(str(path), folder, shuffle=False)
    dm.setup("fit")
    try:
        assert flat(dm.train_dataloader()) == list(range(8))
        assert sorted(flat(dm.val_dataloader())) == [0, 0, 0, 1, 1, 1]
    finally:
        dm.teardown("fit")


def test_two_epoch_fit_validates_every_batch_every_epoch_and_cleans_up() -> None:
    recorder = BatchRecorder()
    dm = make_datamodule(make_samples(20), make_samples(10))
    trainer = make_trainer(max_epochs=2, num_sanity_val_steps=2, limit_train_batches=3, callbacks=[recorder])
    trainer.fit(TinyModel(), datamodule=dm)
    # sanity check: 2 batches; then every validation batch (4 + 4 + 2 samples) in both epochs
    assert [len(run) for run in recorder.val_runs] == [2, 3, 3]
    assert [flat(run) for run in recorder.val_runs[1:]] == [list(range(10))] * 2
    assert len(recorder.train) == 6
    assert wait_for_no_children() == {}


def test_early_stopping_leaves_no_workers() -> None:
    dm = make_datamodule(make_samples(12), make_samples(8))
    stopper = EarlyStopping(monitor="val_loss", patience=0, min_delta=1e9, mode="min")  # stops after epoch 2
    trainer = make_trainer(max_epochs=10, callbacks=[stopper])
    trainer.fit(TinyModel(), datamodule=dm)
    assert trainer.current_epoch < 10 and trainer.should_stop
    assert wait_for_no_children() == {}


def test_exception_in_training_step_stops_every_loader_process() -> None:
    dm = make_datamodule(make_samples(16), make_samples(8))
    trainer = make_trainer(max_epochs=1, num_sanity_val_steps=1)
    with pytest.raises(RuntimeError, match="boom in training_step"):
        trainer.fit(TinyModel(fail_at_step=2), datamodule=dm)
    assert wait_for_no_children() == {}
    assert dm._loaders == {}


def test_validate_and_test_use_their_own_sources() -> None:
    samples = make_samples(6)
    dm = CrumpetsDataModule(val=samples, test=samples[:5], batch_size=4, nworkers=1, image_size=(SIZE, SIZE))
    trainer = make_trainer()
    model = TinyModel()
    (val,) = trainer.validate(model, datamodule=dm, verbose=False)
    (test,) = trainer.test(model, datamodule=dm, verbose=False)
    assert set(val) == {"val_loss"} and set(test) == {"test_loss"}
    assert wait_for_no_children() == {}
    with pytest.raises(ValueError, match="no `predict` source"):
        dm.setup("predict")


@pytest.mark.parametrize(
    ("kwargs", "error", "fragments"),
    [
        ({"batch_size": 0}, ValueError, ["`batch_size`", "got 0", "positive int"]),
        ({"batch_size": 6, "num_mini_batches": 4}, ValueError, ["`batch_size` (6)", "`num_mini_batches` (4)"]),
        ({"num_mini_batches": 0}, ValueError, ["`num_mini_batches`", "got 0", "positive int"]),
        ({"channels": 2}, ValueError, ["`channels`", "got 2", "channels: 3", "channels: 1"]),
        ({"image_size": (16,)}, ValueError, ["`image_size`", "(16,)", "image_size: 224", "[224, 160]"]),
        ({"image_size": "big"}, ValueError, ["`image_size`", "'big'", "image_size: 224"]),
        ({"image_size": (16, 0)}, ValueError, ["`image_size`", "got 0", "positive ints"]),
        ({"nworkers": 0}, ValueError, ["`nworkers`", "got 0", "positive int or None"]),
        ({"timeout": "x"}, TypeError, ["`timeout`", "'x' (str)", "positive number of seconds", "timeout: 120"]),
        ({"timeout": 0}, ValueError, ["`timeout`", "got 0", "positive number of seconds"]),
        ({"seed": -1}, ValueError, ["`seed`", "got -1", "int in [0, 2**63)"]),
        ({"seed": 2**63}, ValueError, ["`seed`", f"got {2**63}", "int in [0, 2**63)"]),
        ({"seed": 1.5}, TypeError, ["`seed`", "1.5 (float)", "int in [0, 2**63)"]),
        ({"timeout": float("inf")}, ValueError, ["`timeout`", "got inf", "positive number of seconds"]),
        ({"shared_memory": 1}, ValueError, ["`shared_memory`", "got 1", "int >= 2", "false (send batches"]),
        ({"shuffle": "yes"}, TypeError, ["`shuffle`", "'yes' (str)", "true or false"]),
        ({"drop_last": None}, TypeError, ["`drop_last`", "None (NoneType)", "true or false"]),
        ({"shuffle_window": 0}, ValueError, ["`shuffle_window`", "got 0", "None to shuffle globally"]),
        ({"train_rng": {"prob": 1.0}}, TypeError, ["`train_rng`", "got dict", "MixtureRNG", "class_path"]),
        ({"val_params": [1, 2]}, TypeError, ["`val_params`", "got list", "INPUT_PARAMS_VAL"]),
        ({"val_params": {"zoom": 2}}, ValueError, ["`val_params`", "zoom", "allowed"]),
        ({"worker": "ClassificationWorker"}, TypeError, ["`worker`", "got str", "BufferWorker subclass"]),
    ],
)
def test_bad_arguments_are_named_with_what_they_got_and_what_they_accept(
    kwargs: dict[str, Any], error: type[Exception], fragments: list[str]
) -> None:
    with pytest.raises(error) as raised:
        CrumpetsDataModule(make_samples(2), **kwargs)
    for fragment in fragments:
        assert fragment in str(raised.value), (fragment, str(raised.value))


def test_an_int_image_size_is_a_square_also_from_the_command_line() -> None:
    from jsonargparse import ArgumentParser

    dm = make_datamodule(make_samples(4), image_size=SIZE // 2)
    assert dm.image_size == (SIZE // 2, SIZE // 2)
    dm.setup("fit")
    try:
        assert next(iter(dm.train_dataloader()))["image"].shape == (4, 3, SIZE // 2, SIZE // 2)
    finally:
        dm.teardown("fit")

    parser = ArgumentParser(exit_on_error=False)
    parser.add_class_arguments(CrumpetsDataModule, "data")
    for value, expected in (("224", (224, 224)), ("[224, 160]", (224, 160))):
        config = parser.parse_args([f"--data.image_size={value}"])
        assert parser.instantiate_classes(config).data.image_size == expected


def test_a_source_of_the_wrong_type_is_named() -> None:
    with pytest.raises(TypeError, match="`train` to be a path"):
        CrumpetsDataModule(train=42)  # type: ignore[arg-type]


def test_path_sources_are_checked_at_construction(tmp_path: Path) -> None:
    text = tmp_path / "notes.txt"
    text.write_text("these are not samples\n" * 3)
    with pytest.raises(ValueError, match=r"notes\.txt"):
        CrumpetsDataModule(train=str(text))
    with pytest.raises(FileNotFoundError, match=r"missing\.msgpack"):
        CrumpetsDataModule(val=tmp_path / "missing.msgpack")


def test_num_mini_batches_needs_the_trainer_to_accumulate_as_many_steps() -> None:
    dm = make_datamodule(make_samples(16), batch_size=8, num_mini_batches=2)
    with pytest.raises(ValueError) as raised:
        make_trainer(max_epochs=1).fit(TinyModel(), datamodule=dm)
    message = str(raised.value)
    for fragment in (
        "num_mini_batches=2",
        "accumulate_grad_batches=1",
        "Trainer(accumulate_grad_batches=2)",
        "trainer.accumulate_grad_batches: 2",
    ):
        assert fragment in message, fragment
    assert wait_for_no_children() == {}

    recorder = BatchRecorder()
    trainer = make_trainer(max_epochs=1, accumulate_grad_batches=2, callbacks=[recorder])
    trainer.fit(TinyModel(), datamodule=dm)
    assert [len(step) for step in recorder.train] == [4, 4, 4, 4]  # 2 batches of 8 = 4 steps of 4
    assert trainer.global_step == 2  # one optimizer step per crumpets batch
    assert wait_for_no_children() == {}


def test_gpu_augmentation_without_a_randomizer_on_the_model_is_an_error_when_the_fit_starts() -> None:
    dm = make_datamodule(make_samples(8), gpu_augmentation=True)
    with pytest.raises(ValueError) as raised:
        make_trainer(max_epochs=1).fit(TinyModel(), datamodule=dm)
    message = str(raised.value)
    for fragment in ("gpu_augmentation=True", "TinyModel has no `randomizer`", "randomizer=Randomizer()"):
        assert fragment in message, fragment
    assert "model.init_args.randomizer" in message and "gpu_augmentation=False" in message
    assert wait_for_no_children() == {}

    from crumpets_lightning.modules import CrossEntropyLoss, CrumpetsModule, Randomizer

    net = nn.Sequential(nn.Flatten(), nn.Linear(3 * SIZE * SIZE, 8))
    model = CrumpetsModule(net, loss=CrossEntropyLoss(), randomizer=Randomizer())
    recorder = BatchRecorder()
    make_trainer(max_epochs=1, callbacks=[recorder]).fit(model, datamodule=dm)
    assert len(recorder.train) == 2
    # validating or testing needs no randomizer
    make_trainer().validate(TinyModel(), datamodule=make_datamodule(val=make_samples(4), gpu_augmentation=True))
    assert wait_for_no_children() == {}


def test_gpu_augmentation_leaves_pixel_ops_to_the_randomizer_but_records_them() -> None:
    from crumpets_lightning.data.augment.record import AUGMENTATION_FIELDS
    from crumpets_lightning.data.augment.rng import MixtureRNG

    samples = make_samples(8)
    noisy = MixtureRNG(prob=1.0, noise_range=(0.2, 0.2))  # pixel noise only, no geometry
    images = {}
    for gpu in (False, True):
        dm = make_datamodule(samples, train_rng=noisy, gpu_augmentation=gpu, shuffle=False, batch_size=8)
        dm.setup("fit")
        try:
            (batch,) = list(dm.train_dataloader())
            noise = batch["augmentation"][:, AUGMENTATION_FIELDS.index("noise")]
            torch.testing.assert_close(noise, torch.full((8,), 0.2))
            images[gpu] = batch["image"].clone()
        finally:
            dm.teardown("fit")
    decoded = np.stack(
        [
            cv2.imdecode(np.frombuffer(s["image"], np.uint8), cv2.IMREAD_COLOR)[:, :, ::-1].transpose(2, 0, 1)
            for s in samples
        ]
    )
    np.testing.assert_array_equal(images[True].numpy(), decoded)  # untouched: the Randomizer will add the noise
    assert np.abs(images[False].numpy().astype(int) - decoded).mean() > 5  # noise applied on the CPU


class _KeyWorker(BufferWorker):
    """A custom worker: writes the sample's label twice and appends its key to a per-batch list."""

    def __init__(self) -> None:
        super().__init__(label=((2,), np.int64))

    def prepare(self, sample: dict[str, Any], batch: dict[str, list], buffers: dict[str, np.ndarray]) -> None:
        buffers["label"][:] = sample["label"]
        batch.setdefault("key", []).append(self.sample_key)


def test_a_custom_worker_is_used_for_every_stage_and_predict_works() -> None:
    samples = make_samples(6)
    dm = CrumpetsDataModule(samples, samples, predict=samples, batch_size=4, nworkers=1, worker=_KeyWorker())
    dm.setup("fit")
    dm.setup("predict")
    try:
        val = list(dm.val_dataloader())
        assert [b["key"] for b in val] == [["s000", "s001", "s002", "s003"], ["s004", "s005"]]
        assert val[1]["label"].tolist() == [[4, 4], [5, 5]]
        assert len(list(dm.predict_dataloader())) == 2
    finally:
        dm.teardown("fit")
    default = CrumpetsDataModule(predict=samples, batch_size=4, nworkers=1, image_size=(SIZE, SIZE))
    predictions = make_trainer().predict(_PredictModel(), datamodule=default)
    assert [p.tolist() for p in predictions] == [[4, 3 * SIZE * SIZE], [2, 3 * SIZE * SIZE]]
    assert wait_for_no_children() == {}


class _PredictModel(TinyModel):
    def predict_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        assert "label" not in batch  # the default predict worker needs no labels
        return torch.tensor(batch["image"].flatten(1).shape)


def test_loaders_nobody_stopped_are_stopped_at_interpreter_exit(tmp_path: Path) -> None:
    script = tmp_path / "forget.py"
    script.write_text(
        "import os, sys\n"
        "sys.path.insert(0, os.environ['REPO'])\n"
        "from tests.data.test_datamodule import make_datamodule, make_samples\n"
        "dm = make_datamodule(make_samples(8))\n"
        "dm.setup('fit')\n"
        "next(iter(dm.train_dataloader()))\n"
        "print(' '.join(map(str, dm.train_dataloader().loader.worker_pids)), flush=True)\n"
    )  # exits without teardown()
    repo = str(Path(__file__).resolve().parents[2])
    result = subprocess.run(
        [sys.executable, str(script)],
        cwd=tmp_path,
        env={**os.environ, "REPO": repo},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    pids = [int(p) for p in result.stdout.split()]
    assert pids
    deadline = time.monotonic() + 5
    while any(Path(f"/proc/{p}").exists() for p in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(Path(f"/proc/{p}").exists() for p in pids)


@pytest.mark.parametrize(("samples", "world_size"), [(10, 1), (11, 1), (15, 2)])
def test_len_counts_the_mini_batches_of_a_short_last_batch(samples: int, world_size: int) -> None:
    dm = make_datamodule(make_samples(samples), batch_size=4, num_mini_batches=2, drop_last=False, shuffle=False)
    dm.trainer = SimpleNamespace(
        global_rank=world_size - 1, world_size=world_size, num_devices=world_size, accumulate_grad_batches=2
    )
    dm.setup("fit")
    try:
        loader = dm.train_dataloader()
        for _ in range(2):
            steps = [labels_of(b) for b in loader]
            assert len(steps) == len(loader) == dm.train_steps_per_epoch()
            per_rank = -(-samples // world_size)
            assert sum(len(s) for s in steps) == per_rank  # nothing dropped, the last rank padded
    finally:
        dm.teardown("fit")


def test_shuffle_window_reaches_the_training_shards_and_their_order(tmp_path: Path) -> None:
    from crumpets_lightning.data.sources import WindowShuffledShards

    samples = make_samples(24)
    shards = []
    for start in range(0, 24, 6):
        shards.append(str(tmp_path / f"train-{start // 6}.msgpack"))
        write_msgpack(samples[start : start + 6], shards[-1])
    dm = make_datamodule(shards, shards[:1], shuffle_window=4, batch_size=4, seed=9)
    dm.setup("fit")
    try:
        train = dm.datasets["train"]
        assert isinstance(train, WindowShuffledShards) and train.shuffle_window == 4
        assert not isinstance(dm.datasets["val"], WindowShuffledShards)  # evaluation is never shuffled
        order = train.shuffled_order(9, 0).tolist()
        assert flat(dm.train_dataloader()) == order  # the epoch follows the shards' window order (C8)
    finally:
        dm.teardown("fit")


def test_shuffle_window_needs_a_training_source_of_msgpack_files(tmp_path: Path) -> None:
    with pytest.raises(ValueError) as raised:
        make_datamodule(make_samples(8), shuffle_window=4)
    assert "`shuffle_window` (4)" in str(raised.value) and "a list of samples" in str(raised.value)
    assert "drop shuffle_window" in str(raised.value)
    (tmp_path / "folder" / "cls").mkdir(parents=True)
    with pytest.raises(ValueError, match="the image folder"):
        make_datamodule(str(tmp_path / "folder"), shuffle_window=4)


def test_every_argument_has_an_args_line_and_a_type_lightning_cli_can_read() -> None:
    import inspect

    import docstring_parser

    documented = {param.arg_name for param in docstring_parser.parse(CrumpetsDataModule.__doc__ or "").params}
    signature = inspect.signature(CrumpetsDataModule.__init__)
    arguments = [name for name in signature.parameters if name != "self"]
    assert set(arguments) == documented
    assert all(signature.parameters[name].annotation is not inspect.Parameter.empty for name in arguments)


@pytest.mark.gpu
def test_pin_memory_hands_out_pinned_batches_with_cuda() -> None:
    dm = make_datamodule(make_samples(8), pin_memory=True)
    dm.setup("fit")
    try:
        batch = next(iter(dm.train_dataloader()))
        assert batch["image"].is_pinned() and batch["label"].is_pinned()
    finally:
        dm.teardown("fit")


def test_a_checkpoint_in_the_middle_of_a_crumpets_batch_resumes_at_the_next_step() -> None:
    samples = make_samples(24)
    kwargs = {"batch_size": 8, "num_mini_batches": 4, "seed": 2}
    reference, interrupted, resumed = (make_datamodule(samples, **kwargs) for _ in range(3))
    for dm in (reference, interrupted, resumed):
        dm.setup("fit")
    try:
        expected = [labels_of(b) for b in reference.train_dataloader()]
        assert len(expected) == 12 and all(len(step) == 2 for step in expected)
        loader = interrupted.train_dataloader()
        iterator = iter(loader)
        got = [labels_of(next(iterator)) for _ in range(6)]  # one and a half crumpets batches
        state = loader.state_dict()
        resumed_loader = resumed.train_dataloader()
        resumed_loader.load_state_dict(state)
        assert resumed_loader.state_dict() == state  # a checkpoint right after loading keeps the point
        iterator = iter(resumed_loader)
        got.append(labels_of(next(iterator)))  # interrupted again, three quarters into the batch
        resumed_loader.load_state_dict(resumed_loader.state_dict())
        rest = [labels_of(b) for b in resumed_loader]
        assert got + rest == expected
        assert len(list(resumed_loader)) == 12  # the epoch after is a full one again
        with pytest.raises(ValueError, match="not a loader state"):
            resumed_loader.load_state_dict({"epoch": 0})
    finally:
        for dm in (reference, interrupted, resumed):
            dm.teardown("fit")
