"""LR policies: formulas per iteration, clamping past the end, deferred length, state round trip."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from crumpets_lightning.modules.policies import (
    NoopPolicy,
    PolyPolicy,
    RampPolicy,
    ReduceLROnPlateau,
    SigmoidPolicy,
)


def _optimizer(lr: float = 0.1, groups: int = 1) -> torch.optim.Optimizer:
    params = [{"params": [torch.nn.Parameter(torch.zeros(1))], "lr": lr * (i + 1)} for i in range(groups)]
    return torch.optim.SGD(params, lr=lr)


def _run(policy, optimizer, steps: int) -> list[list[float]]:
    lrs = [[g["lr"] for g in optimizer.param_groups]]
    for _ in range(steps):
        optimizer.step()
        policy.step()
        lrs.append([g["lr"] for g in optimizer.param_groups])
    return lrs


def test_poly_per_iteration_with_fractional_epochs() -> None:
    optimizer = _optimizer(0.2, groups=2)
    policy = PolyPolicy(optimizer, num_epochs=3, power=0.9, steps_per_epoch=4)
    lrs = _run(policy, optimizer, 15)
    for n, (first, second) in enumerate(lrs):
        t = min(n / 4, 3)
        assert first == pytest.approx(0.2 * (1 - t / 3) ** 0.9)
        assert second == pytest.approx(0.4 * (1 - t / 3) ** 0.9)
    assert all(isinstance(lr, float) and lr >= 0 for row in lrs for lr in row)  # never complex past the end


def test_sigmoid_crumpets_formula() -> None:
    optimizer = _optimizer(1.0)
    policy = SigmoidPolicy(optimizer, num_epochs=2, q=6, steps_per_epoch=5)
    lrs = _run(policy, optimizer, 14)
    for n, (lr,) in enumerate(lrs):
        x = min(n / 5, 2) / 2 - 1
        assert lr == pytest.approx(1.0 / (1.0 + math.exp(6 * x)))


def test_sigmoid_extreme_q_does_not_overflow() -> None:
    optimizer = _optimizer(1.0)
    policy = SigmoidPolicy(optimizer, num_epochs=1, q=-5000.0, steps_per_epoch=2)
    lrs = _run(policy, optimizer, 3)
    assert lrs[0][0] == pytest.approx(0.0) and all(math.isfinite(lr) for (lr,) in lrs)


def test_ramp_rises_then_stays() -> None:
    optimizer = _optimizer(0.5)
    policy = RampPolicy(optimizer, ramp_epochs=2, steps_per_epoch=3)
    lrs = [lr for (lr,) in _run(policy, optimizer, 9)]
    assert lrs == pytest.approx([0.5 * min((n + 1) / 6, 1.0) for n in range(10)])
    assert lrs[0] > 0


def test_noop_keeps_lr() -> None:
    optimizer = _optimizer(0.3)
    policy = NoopPolicy(optimizer)
    assert [lr for (lr,) in _run(policy, optimizer, 3)] == [0.3] * 4


def test_deferred_length_is_filled_in_and_explicit_values_kept() -> None:
    optimizer = _optimizer(0.1)
    policy = PolyPolicy(optimizer, power=1.0)
    assert not policy.length_known
    policy.configure_length(num_epochs=2, steps_per_epoch=5)
    assert (policy.num_epochs, policy.steps_per_epoch) == (2, 5)
    lrs = [lr for (lr,) in _run(policy, optimizer, 5)]
    assert lrs[-1] == pytest.approx(0.05)
    explicit = PolyPolicy(_optimizer(), num_epochs=7, steps_per_epoch=3)
    explicit.configure_length(num_epochs=2, steps_per_epoch=5)
    assert (explicit.num_epochs, explicit.steps_per_epoch) == (7, 3)


def test_stepping_without_length_is_a_clear_error() -> None:
    optimizer = _optimizer()
    policy = PolyPolicy(optimizer)
    optimizer.step()
    with pytest.raises(RuntimeError, match="configure_length"):
        policy.step()


def test_state_dict_round_trip() -> None:
    optimizer = _optimizer(0.1)
    policy = PolyPolicy(optimizer, num_epochs=4, power=2.0, steps_per_epoch=3)
    _run(policy, optimizer, 5)
    state = policy.state_dict()
    optimizer2 = _optimizer(0.1)
    restored = PolyPolicy(optimizer2)
    optimizer2.load_state_dict(optimizer.state_dict())
    restored.load_state_dict(state)
    assert (restored.num_epochs, restored.power, restored.last_epoch) == (4, 2.0, 5)
    resumed = [lr for (lr,) in _run(restored, optimizer2, 3)]
    assert resumed == pytest.approx([lr for (lr,) in _run(policy, optimizer, 3)])
    assert resumed[-1] == pytest.approx(0.1 * (1 - (8 / 3) / 4) ** 2)


def test_reduce_on_plateau_crumpets_and_torch_signatures() -> None:
    optimizer = _optimizer(1.0)
    policy = ReduceLROnPlateau(optimizer, patience=0, factor=0.5)
    policy.step(metrics=1.0)
    policy.step(None, 2.0)  # crumpets: step(epoch, metrics)
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.5)
    policy.step(3.0)  # torch / Lightning: the value positionally
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.25)
    with pytest.raises(ValueError, match="monitored value"):
        policy.step()


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda o: PolyPolicy(o, num_epochs=0), "num_epochs"),
        (lambda o: PolyPolicy(o, num_epochs=2, power=-1), "power"),
        (lambda o: PolyPolicy(o, num_epochs=2, steps_per_epoch=0), "steps_per_epoch"),
        (lambda o: RampPolicy(o, ramp_epochs=0), "ramp_epochs"),
        (lambda o: SigmoidPolicy(o, num_epochs=2, q=float("nan")), "`q`"),
    ],
)
def test_argument_validation(make, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        make(_optimizer())


@given(
    power=st.floats(min_value=0.0, max_value=5.0),
    num_epochs=st.floats(min_value=0.1, max_value=10.0),
    steps=st.integers(min_value=0, max_value=200),
)
def test_poly_lr_is_always_real_and_in_range(power: float, num_epochs: float, steps: int) -> None:
    optimizer = _optimizer(0.1)
    policy = PolyPolicy(optimizer, num_epochs=num_epochs, power=power, steps_per_epoch=7)
    policy.last_epoch = steps
    for lr in policy.get_lr():
        assert isinstance(lr, float) and 0.0 <= lr <= 0.1 + 1e-12
