"""The Lightning rules of SPEC section 3: probing iter(), set_epoch order, state_dict resume, sampler attrs."""

from __future__ import annotations

import numpy as np
import pytest

from crumpets_lightning.data.loader.loader import TurboDataLoader
from tests.data._helpers import EchoWorker, collect, value_samples


def make(**kwargs):
    args = {"nworkers": 2, "seed": 21, "shuffle": True}
    args.update(kwargs)
    return TurboDataLoader(value_samples(23), 4, EchoWorker(), **args)


def flat(batches, key="value"):
    return np.concatenate([m[key] for mb in batches for m in mb])


@pytest.mark.parametrize("stop_after", [0, 1, 3, 5])
def test_resume_mid_epoch_equals_the_uninterrupted_run_bitwise(stop_after):
    reference_loader = make()
    reference = collect(reference_loader, epochs=2)
    reference_loader.stop()

    first = make()
    first.set_epoch(0)
    it = iter(first)
    head = []
    for _ in range(stop_after):
        _, mb = next(it)
        head.append([{k: (v.copy() if isinstance(v, np.ndarray) else v) for k, v in m.items()} for m in mb])
    state = first.state_dict()
    first.stop()
    assert state["batches_done"] == stop_after and state["epoch"] == 0

    resumed = make(nworkers=1)
    resumed.load_state_dict(state)
    it = iter(resumed)  # Lightning's order: load_state_dict -> iter() -> set_epoch(e) -> next()
    resumed.set_epoch(0)
    tail = [[{k: (v.copy() if isinstance(v, np.ndarray) else v) for k, v in m.items()} for m in mb] for _, mb in it]
    assert len(tail) == len(resumed) - stop_after
    resumed.set_epoch(1)
    second_epoch = collect(resumed)
    assert resumed.iteration == 2 * len(resumed)
    resumed.stop()
    for key in ("value", "draw", "block"):
        assert flat(head + tail, key).tobytes() == flat(reference[:6], key).tobytes()
        assert flat(second_epoch, key).tobytes() == flat(reference[6:], key).tobytes()


def test_state_at_the_end_of_an_epoch_resumes_at_the_next_epoch():
    loader = make()
    collect(loader)
    state = loader.state_dict()
    loader.stop()
    assert state["batches_done"] == len(loader)
    resumed = make()
    resumed.load_state_dict(state)
    assert resumed.epoch == 1
    got = collect(resumed)
    resumed.stop()
    reference_loader = make()
    reference = collect(reference_loader, epochs=2)[6:]
    reference_loader.stop()
    assert flat(got).tobytes() == flat(reference).tobytes()


def test_state_from_a_different_loader_is_rejected():
    state = make().state_dict()
    for kwargs, name in (({"seed": 22}, "seed"), ({"world_size": 2}, "world_size"), ({"drop_last": True}, "drop_last")):
        with pytest.raises(ValueError, match=name):
            make(**kwargs).load_state_dict(state)
    other_length = TurboDataLoader(value_samples(24), 4, EchoWorker(), nworkers=1, seed=21, shuffle=True)
    with pytest.raises(ValueError, match="samples"):
        other_length.load_state_dict(state)
    # a loader with a random seed adopts the saved one
    unseeded = TurboDataLoader(value_samples(23), 4, EchoWorker(), nworkers=1, shuffle=True)
    unseeded.load_state_dict(state)
    assert unseeded.seed == 21


def test_sampler_set_epoch_forwards_and_batch_sampler_is_none():
    loader = make()
    assert loader.batch_sampler is None
    it = iter(loader)
    loader.sampler.set_epoch(3)  # Lightning calls iter() first, then set_epoch
    values = [mb[0]["value"].ravel().tolist() for _, mb in it]
    loader.stop()
    other = make()
    other.set_epoch(3)
    assert values == [mb[0]["value"].ravel().tolist() for _, mb in other]
    other.stop()


def test_every_iter_yields_len_batches_even_after_probing_and_abandoning():
    loader = make(drop_last=True)
    iter(loader)  # a probe: starts nothing, changes nothing
    assert not loader.running
    counts = []
    for epoch in range(3):
        it = iter(loader)
        loader.set_epoch(epoch)
        if epoch == 1:
            next(it)  # abandoned, like a sanity check
            it = iter(loader)
        counts.append(sum(1 for _ in it))
    loader.stop()
    assert counts == [len(loader)] * 3 == [5] * 3


def test_state_dict_is_plain_data():
    loader = make()
    state = loader.state_dict()
    assert set(state) >= {"epoch", "batches_done", "iteration", "seed", "samples", "world_size"}
    assert all(isinstance(v, (int, bool, type(None))) for v in state.values())
