"""CrumpetsHooks: the nine crumpets Trainer events, their order, state and keyword arguments under Lightning."""

from __future__ import annotations

import pickle
from typing import Any

import pytest
import torch

from crumpets_lightning.callbacks.hooks import HOOK_EVENTS, CrumpetsHooks
from tests.callbacks._helpers import DictDataset, DictModule, loaders, make_trainer

CRUMPETS_EVENTS = {
    "train_begin",
    "train_end",
    "train_pre_forward",
    "train_forward",
    "train_backward",
    "val_begin",
    "val_end",
    "val_pre_forward",
    "val_forward",
}


def _record_all(hooks: CrumpetsHooks, log: list[tuple[str, dict[str, Any], dict[str, Any]]]) -> None:
    for event in HOOK_EVENTS:

        def record(state: dict[str, Any], _event: str = event, **kwargs: Any) -> None:
            log.append((_event, dict(state), kwargs))

        hooks.add_hook(event, record)


def _global_hook(state: dict[str, Any], **kwargs: Any) -> None:
    """A picklable hook (module level)."""


def test_events_are_the_crumpets_ones() -> None:
    assert set(HOOK_EVENTS) == CRUMPETS_EVENTS


def test_unknown_event_lists_the_valid_ones() -> None:
    hooks = CrumpetsHooks()
    with pytest.raises(ValueError, match="train_forwrd") as error:
        hooks.add_hook("train_forwrd", _global_hook)
    for event in CRUMPETS_EVENTS:
        assert event in str(error.value)
    with pytest.raises(ValueError, match="val_begin"):
        hooks.remove_hook("nope", _global_hook)


def test_add_and_remove() -> None:
    hooks = CrumpetsHooks()
    calls: list[str] = []

    def first(state: dict[str, Any], **kwargs: Any) -> None:
        calls.append("first")

    def second(state: dict[str, Any], **kwargs: Any) -> None:
        calls.append("second")

    hooks.add_hook("train_begin", first)
    hooks.add_hook("train_begin", second)
    assert hooks.hooks("train_begin") == [first, second]
    hooks.remove_hook("train_begin", first)
    assert hooks.hooks("train_begin") == [second]
    with pytest.raises(ValueError, match="not a hook of event 'train_begin'"):
        hooks.remove_hook("train_begin", first)
    with pytest.raises(TypeError, match="callable"):
        hooks.add_hook("train_end", "not a function")  # type: ignore[arg-type]
    constructed = CrumpetsHooks({"val_end": [first, second], "train_end": first})
    assert constructed.hooks("val_end") == [first, second]
    assert constructed.hooks("train_end") == [first]


def test_event_order_during_fit(tmp_path) -> None:
    epochs, batch_size, n_train, n_val = 2, 4, 12, 8
    train_batches, val_batches = n_train // batch_size, n_val // batch_size
    hooks = CrumpetsHooks()
    log: list[tuple[str, dict[str, Any], dict[str, Any]]] = []
    _record_all(hooks, log)
    trainer = make_trainer(tmp_path, max_epochs=epochs, callbacks=[hooks], num_sanity_val_steps=2)
    train, val = loaders(batch_size, n_train, n_val)
    trainer.fit(DictModule(), train, val)

    expected: list[str] = []
    for _ in range(epochs):
        expected.append("train_begin")
        expected += ["train_pre_forward", "train_forward", "train_backward"] * train_batches
        # Lightning validates at the end of the epoch before on_train_epoch_end; the sanity check raises nothing.
        expected += ["val_begin", *(["val_pre_forward", "val_forward"] * val_batches), "val_end"]
        expected.append("train_end")
    assert [event for event, _, _ in log] == expected

    epochs_seen = [state["epoch"] for event, state, _ in log if event == "train_begin"]
    assert epochs_seen == list(range(epochs))
    train_steps = [state for event, state, _ in log if event == "train_backward"]
    assert [s["batch_idx"] for s in train_steps] == list(range(train_batches)) * epochs
    # global_step counts optimizer steps: backward of step k runs before the k-th optimizer step
    assert [s["iteration"] for s in train_steps] == list(range(epochs * train_batches))
    assert all(s["trainer"] is trainer and s["stage"] == "train" for s in train_steps)
    assert all(state["stage"] == "val" for event, state, _ in log if event.startswith("val"))


def test_keyword_arguments(tmp_path) -> None:
    hooks = CrumpetsHooks()
    seen: dict[str, list[dict[str, Any]]] = {event: [] for event in HOOK_EVENTS}
    module = DictModule()

    def pre_forward(state: dict[str, Any], sample: dict[str, torch.Tensor]) -> None:
        seen["train_pre_forward"].append({"sample": sample, "batch_idx": state["batch_idx"]})

    def forward(state: dict[str, Any], metric: dict[str, Any], loss: torch.Tensor, output: Any) -> None:
        grads = [p.grad for p in state["module"].parameters()]
        seen["train_forward"].append(
            {"loss": loss.detach().clone(), "output": output, "metric": dict(metric), "grads": grads}
        )

    def backward(state: dict[str, Any], metric: dict[str, Any], loss: torch.Tensor, output: Any) -> None:
        grads = [None if p.grad is None else p.grad.clone() for p in state["module"].parameters()]
        seen["train_backward"].append({"loss": loss.detach().clone(), "output": output, "grads": grads})

    def val_forward(state: dict[str, Any], metric: dict[str, Any], loss: torch.Tensor, output: Any) -> None:
        seen["val_forward"].append({"loss": loss, "output": output, "metric": dict(metric)})

    hooks.add_hook("train_pre_forward", pre_forward)
    hooks.add_hook("train_forward", forward)
    hooks.add_hook("train_backward", backward)
    hooks.add_hook("val_forward", val_forward)
    train, val = loaders(batch_size=4, train=8, val=4)
    trainer = make_trainer(tmp_path, max_epochs=1, callbacks=[hooks], num_sanity_val_steps=0)
    trainer.fit(module, train, val)

    dataset = train.dataset
    assert isinstance(dataset, DictDataset)
    for step, record in enumerate(seen["train_pre_forward"]):
        rows = slice(4 * step, 4 * step + 4)
        assert torch.equal(record["sample"]["label"], dataset.labels[rows])
        assert torch.equal(record["sample"]["image"], dataset.images[rows])
    assert len(seen["train_forward"]) == len(seen["train_backward"]) == 2
    for step, (fwd, bwd) in enumerate(zip(seen["train_forward"], seen["train_backward"])):
        labels = dataset.labels[4 * step : 4 * step + 4]
        # output is the forward result of this step: the loss recomputed from it equals the hook's loss
        reference = torch.nn.functional.cross_entropy(fwd["output"]["output"].detach(), labels)
        assert torch.allclose(fwd["loss"], reference)
        assert torch.equal(fwd["output"]["label"], labels)
        assert fwd["metric"]["train/loss"] == pytest.approx(float(fwd["loss"]))
        assert bwd["output"] is fwd["output"]
        assert torch.equal(bwd["loss"], fwd["loss"])
        # train_forward runs before backward (no gradients yet on the first step), train_backward after it
        if step == 0:
            assert all(g is None for g in fwd["grads"])
        assert all(g is not None and torch.count_nonzero(g) > 0 for g in bwd["grads"])
    (val_record,) = seen["val_forward"]
    assert isinstance(val.dataset, DictDataset)
    val_labels = val.dataset.labels
    reference = torch.nn.functional.cross_entropy(val_record["output"]["output"], val_labels)
    assert torch.allclose(val_record["loss"], reference)
    # validation values logged per step are passed; epoch-only ones (val/loss) are not known yet
    assert val_record["metric"]["val/step_loss"] == pytest.approx(float(reference))
    assert "val/loss" not in val_record["metric"]
    assert not any(key.startswith("train") for key in val_record["metric"])
    # the forward hook is removed when fit ends
    assert len(module._forward_hooks) == 0


def test_validate_raises_val_events_only(tmp_path) -> None:
    hooks = CrumpetsHooks()
    log: list[tuple[str, dict[str, Any], dict[str, Any]]] = []
    _record_all(hooks, log)
    _, val = loaders(batch_size=4, val=8)
    make_trainer(tmp_path, callbacks=[hooks]).validate(DictModule(), val)
    assert [event for event, _, _ in log] == ["val_begin", *(["val_pre_forward", "val_forward"] * 2), "val_end"]


def test_removed_hook_is_not_called(tmp_path) -> None:
    calls: list[int] = []

    def count(state: dict[str, Any], **kwargs: Any) -> None:
        calls.append(state["batch_idx"])

    hooks = CrumpetsHooks({"train_pre_forward": count})
    train, val = loaders(batch_size=4, train=8, val=4)
    make_trainer(tmp_path, max_epochs=1, callbacks=[hooks]).fit(DictModule(), train, val)
    assert calls == [0, 1]
    hooks.remove_hook("train_pre_forward", count)
    make_trainer(tmp_path, max_epochs=1, callbacks=[hooks]).fit(DictModule(), train, val)
    assert calls == [0, 1]


def test_picklable_for_ddp_spawn(tmp_path) -> None:
    hooks = CrumpetsHooks({"train_begin": _global_hook})
    module = DictModule()
    trainer = make_trainer(tmp_path, max_epochs=1, callbacks=[hooks])
    hooks.setup(trainer, module, "fit")  # holds a forward-hook handle now
    copy = pickle.loads(pickle.dumps(hooks))
    assert copy.hooks("train_begin") == [_global_hook]
    hooks.teardown(trainer, module, "fit")
    assert len(module._forward_hooks) == 0
