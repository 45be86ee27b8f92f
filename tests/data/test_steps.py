"""StepLoader without Lightning: steps straight from the epoch plan, index/padding keys, exact step resume."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from crumpets_lightning.data.loader import StepLoader
from crumpets_lightning.data.loader.torch_loader import TorchTurboDataLoader
from tests.conftest import descendants
from tests.data._helpers import EchoWorker, value_samples


def make(n=22, batch_size=8, **kwargs):
    args = {"nworkers": 2, "seed": 5, "shuffle": True, "num_mini_batches": 2}
    args.update(kwargs)
    return TorchTurboDataLoader(value_samples(n), batch_size, EchoWorker(), **args)


def values(steps):
    return [step["value"].ravel().tolist() for step in steps]


def drain(step_loader):
    return [{k: (v.clone() if isinstance(v, torch.Tensor) else v) for k, v in s.items()} for s in step_loader]


def test_steps_are_the_crumpets_mini_batches_and_len_counts_them():
    loader = make()
    steps = StepLoader(loader)
    assert len(steps) == 6  # 22 samples, batch 8 in steps of 4: 4 + 4 + ... + the last batch's 4 + 2
    got = drain(steps)
    loader.stop()
    reference = make()
    expected = [m["value"].ravel().tolist() for _, mini_batches in reference for m in mini_batches]
    reference.stop()
    assert values(got) == expected and len(got) == len(steps)
    assert [len(s["value"]) for s in got] == [4, 4, 4, 4, 4, 2]
    for step in got:
        assert step["index"].dtype == torch.int64 and "padding" not in step
        assert step["index"].tolist() == step["value"].ravel().tolist()  # value_samples: value == index
        assert step["key"] == [f"s{i}" for i in step["index"].tolist()]


def test_attributes_lightning_reads():
    loader = make(n=23)
    steps = StepLoader(loader)
    assert steps.loader is loader
    assert steps.batch_sampler is None and steps.batch_size == 4
    assert len(steps.dataset) == 23
    steps.sampler.set_epoch(3)
    assert loader.epoch == 3
    assert "StepLoader(steps=6" in repr(steps)


def test_iter_starts_nothing_and_every_iter_is_a_full_epoch():
    loader = make(drop_last=True)
    steps = StepLoader(loader)
    before = set(descendants())
    iter(steps)
    assert set(descendants()) == before and not loader.running
    it = iter(steps)
    next(it)  # abandoned, like a sanity check
    assert len(drain(steps)) == len(steps) == 4
    assert len(drain(steps)) == 4
    steps.stop()
    steps.stop()
    assert not loader.running
    assert len(drain(steps)) == 4  # restarts
    steps.stop()


@pytest.mark.parametrize("world_size", [2, 3])
def test_padding_marks_the_repeats_and_the_rest_is_every_sample_once(world_size):
    seen, counts = [], set()
    for rank in range(world_size):
        loader = make(n=23, batch_size=4, shuffle=False, num_mini_batches=1, rank=rank, world_size=world_size)
        got = drain(StepLoader(loader))
        loader.stop()
        counts.add(len(got))
        assert all("padding" in step and step["padding"].dtype == torch.bool for step in got)
        for step in got:
            seen += step["index"][~step["padding"]].tolist()
            assert step["index"].tolist() == step["value"].ravel().tolist()
    assert len(counts) == 1
    assert sorted(seen) == list(range(23))
    # drop_last cuts instead of padding: no padding key
    loader = make(n=23, batch_size=4, rank=0, world_size=2, drop_last=True)
    assert all("padding" not in step for step in drain(StepLoader(loader)))
    loader.stop()


@pytest.mark.parametrize("num_mini_batches", [1, 2, 4])
def test_resume_at_every_step_gives_exactly_the_remaining_steps(num_mini_batches):
    reference = make(n=21, num_mini_batches=num_mini_batches)
    full = drain(StepLoader(reference)) + drain(StepLoader(reference))
    reference.stop()
    per_epoch = len(full) // 2
    for done in range(per_epoch + 1):
        first = make(n=21, num_mini_batches=num_mini_batches)
        steps = StepLoader(first)
        it = iter(steps)
        head = [next(it) for _ in range(done)]
        state = steps.state_dict()
        assert state["steps_done"] == done
        first.stop()
        del head, it
        resumed = StepLoader(make(n=21, num_mini_batches=num_mini_batches, nworkers=1))
        resumed.load_state_dict(state)
        assert resumed.state_dict()["steps_done"] == (done if done < per_epoch else 0)
        it = iter(resumed)  # Lightning's order: load_state_dict -> iter() -> set_epoch(e) -> next()
        resumed.sampler.set_epoch(0 if done < per_epoch else 1)
        rest = drain(it)
        expected = full[done:per_epoch] if done < per_epoch else full[per_epoch:]
        assert values(rest) == values(expected)
        for got, want in zip(rest, expected):
            assert torch.equal(got["draw"], want["draw"]) and torch.equal(got["index"], want["index"])
        resumed.stop()


def test_a_state_from_a_different_loader_is_rejected():
    steps = StepLoader(make())
    with pytest.raises(ValueError, match="different data loader"):
        steps.load_state_dict({"mini_batch": 0})
    with pytest.raises(ValueError, match="num_mini_batches"):
        steps.load_state_dict(make(num_mini_batches=4).state_dict())


def test_skipped_bad_samples_leave_their_steps_shorter_and_index_consistent():
    samples = value_samples(12)
    samples[5] = {"key": "broken"}
    loader = TorchTurboDataLoader(samples, 4, EchoWorker(), 2, num_mini_batches=2, skip_bad_samples=True, seed=0)
    with pytest.warns(RuntimeWarning, match="broken"):
        got = drain(StepLoader(loader))
    loader.stop()
    assert len(got) == 6
    assert [s["index"].tolist() for s in got] == [[0, 1], [2, 3], [4], [6, 7], [8, 9], [10, 11]]
    assert all(s["index"].tolist() == s["value"].ravel().tolist() for s in got)


def test_the_index_is_a_view_of_the_plan_not_built_per_sample():
    loader = make(n=16, shuffle=True)
    it = iter(StepLoader(loader))
    first, second = next(it), next(it)
    assert first["index"].untyped_storage().data_ptr() == second["index"].untyped_storage().data_ptr()
    assert np.array_equal(np.concatenate([first["index"].numpy(), second["index"].numpy()]), loader.plan.order(0)[:8])
    del first, second, it
    loader.stop()


class _Recorder:
    """A LightningModule factory: a linear model on ``draw`` that records each step's indices."""

    @staticmethod
    def build(crash_at=None):
        import lightning.pytorch as pl

        class Model(pl.LightningModule):
            def __init__(self):
                super().__init__()
                self.layer = torch.nn.Linear(1, 1)
                self.seen = []

            def training_step(self, batch, batch_idx):
                if crash_at is not None and len(self.seen) == crash_at:
                    raise RuntimeError("simulated crash")
                self.seen.append(batch["index"].tolist())
                return self.layer(batch["draw"].float()).pow(2).mean()

            def configure_optimizers(self):
                return torch.optim.SGD(self.parameters(), lr=0.1)

        return Model()


def _fit(tmp_path, name, crash_at=None, ckpt_path=None):
    import lightning.pytorch as pl
    from lightning.pytorch.callbacks import ModelCheckpoint

    loader = make(n=22, batch_size=8, num_mini_batches=2)  # 6 steps per epoch: 2 + 2 + 2 (last batch: 6 rows)
    model = _Recorder.build(crash_at)
    checkpoint = ModelCheckpoint(dirpath=tmp_path / name, filename="{step}", every_n_train_steps=1, save_top_k=-1)
    trainer = pl.Trainer(accelerator="cpu", max_epochs=2, logger=False, enable_progress_bar=False,
                         enable_model_summary=False, callbacks=[checkpoint], accumulate_grad_batches=2)  # fmt: skip
    try:
        if crash_at is None:
            trainer.fit(model, train_dataloaders=StepLoader(loader), ckpt_path=ckpt_path)
        else:
            with pytest.raises(RuntimeError, match="simulated crash"):
                trainer.fit(model, train_dataloaders=StepLoader(loader))
    finally:
        loader.stop()
    return model


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_a_real_trainer_resumes_mid_epoch_with_the_same_steps(tmp_path):
    full = _fit(tmp_path, "full").seen
    assert len(full) == 12
    crashed = _fit(tmp_path, "crashed", crash_at=8).seen  # in the second epoch, after 4 optimizer steps
    assert crashed == full[:8]
    resumed = _fit(tmp_path, "resumed", ckpt_path=str(tmp_path / "crashed" / "step=4.ckpt")).seen
    assert resumed == full[8:]
