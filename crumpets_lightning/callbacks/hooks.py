"""The crumpets Trainer's nine hook events as a Lightning callback."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities.types import STEP_OUTPUT
from typing_extensions import override

__all__ = ["HOOK_EVENTS", "CrumpetsHooks", "HookFunction"]

HOOK_EVENTS: tuple[str, ...] = (
    "train_begin",
    "train_end",
    "train_pre_forward",
    "train_forward",
    "train_backward",
    "val_begin",
    "val_end",
    "val_pre_forward",
    "val_forward",
)
"""The event names accepted by :meth:`CrumpetsHooks.add_hook`, in the crumpets spelling."""

HookFunction = Callable[..., Any]
"""``fn(state: dict, **kwargs)``: see :class:`CrumpetsHooks` for the keyword arguments of each event."""


class CrumpetsHooks(Callback):
    """Runs functions at the crumpets Trainer's events, mapped onto Lightning's hooks.

    Every function is called as ``fn(state, **kwargs)``. ``state`` is a dict with ``"stage"`` (``"train"`` or
    ``"val"``), ``"epoch"`` (Lightning's 0-based ``current_epoch``), ``"iteration"`` and ``"global_step"`` (optimizer
    steps so far), ``"batch_idx"`` (``None`` for epoch events), ``"trainer"`` and ``"module"``.

    ===================== ============================================ ==========================================
    event                 when (Lightning hook)                        keyword arguments
    ===================== ============================================ ==========================================
    ``train_begin``       ``on_train_epoch_start``                     none
    ``train_end``         ``on_train_epoch_end``                       none
    ``train_pre_forward`` ``on_train_batch_start``                     ``sample``
    ``train_forward``     ``on_before_backward``                       ``metric``, ``loss``, ``output``
    ``train_backward``    ``on_after_backward`` (before the optimizer) ``metric``, ``loss``, ``output``
    ``val_begin``         ``on_validation_epoch_start``                none
    ``val_end``           ``on_validation_epoch_end``                  none
    ``val_pre_forward``   ``on_validation_batch_start``                ``sample``
    ``val_forward``       ``on_validation_batch_end``                  ``metric``, ``loss``, ``output``
    ===================== ============================================ ==========================================

    ``sample`` is the batch dict as the step receives it. ``output`` is what the module's ``forward`` returned
    in this step (for a ``CrumpetsModule`` the sample dict with ``"output"`` added); it is ``None`` when the step
    never calls the module (``self(...)``) — calling ``self.forward(...)`` directly bypasses the capture.
    ``loss`` is the loss tensor being backpropagated (training) or the step's returned loss (validation:
    ``outputs["loss"]`` or the returned tensor). ``metric`` maps the names of the values the module logged whose
    names start with the stage (``"train"`` or ``"val"``) to their latest values (``trainer.callback_metrics``
    and ``logged_metrics``): this step's value for those logged with ``on_step=True`` (Lightning's default in
    training, not in validation), the last epoch's for epoch-only ones.

    Lightning validates at the end of a training epoch before ``on_train_epoch_end``, so in a fit the order per
    epoch is ``train_begin``, the steps, ``val_begin`` ... ``val_end``, then ``train_end`` (crumpets validated
    after ``train_end``). Validation events are not raised during Lightning's sanity check (crumpets has none),
    but are raised by ``trainer.validate()``. With manual optimization ``train_forward`` runs when
    ``manual_backward`` is called, before the step returns, so its ``output`` is the latest forward result.

    Args:
        hooks: Optional initial hooks: event name -> function or list of functions.

    Raises:
        ValueError: If an event name is unknown.
        TypeError: If a hook is not callable.

    Example::

        hooks = CrumpetsHooks()
        hooks.add_hook("train_forward", lambda state, loss, **_: print(state["iteration"], loss.item()))
        trainer = lightning.Trainer(callbacks=[hooks])
    """

    def __init__(self, hooks: Mapping[str, HookFunction | Iterable[HookFunction]] | None = None) -> None:
        super().__init__()
        self._hooks: dict[str, list[HookFunction]] = {event: [] for event in HOOK_EVENTS}
        self._last_output: Any = None
        self._last_loss: torch.Tensor | None = None
        self._forward_handle: torch.utils.hooks.RemovableHandle | None = None
        for name, functions in (hooks or {}).items():
            for function in [functions] if callable(functions) else functions:
                self.add_hook(name, function)

    def add_hook(self, name: str, fn: HookFunction) -> None:
        """Run ``fn(state, **kwargs)`` at event ``name`` (after the functions added before it).

        Args:
            name: One of :data:`HOOK_EVENTS`.
            fn: The function; see the class docstring for its keyword arguments.

        Raises:
            ValueError: If ``name`` is not a known event.
            TypeError: If ``fn`` is not callable.
        """
        self._check_name(name)
        if not callable(fn):
            raise TypeError(f"Expected a callable hook for event {name!r} but got {fn!r} ({type(fn).__name__}).")
        self._hooks[name].append(fn)

    def remove_hook(self, name: str, fn: HookFunction) -> None:
        """Stop running ``fn`` at event ``name`` (its first registration, if it was added twice).

        Args:
            name: One of :data:`HOOK_EVENTS`.
            fn: A function added with :meth:`add_hook` for this event.

        Raises:
            ValueError: If ``name`` is not a known event or ``fn`` is not registered for it.
        """
        self._check_name(name)
        try:
            self._hooks[name].remove(fn)
        except ValueError:
            raise ValueError(f"{fn!r} is not a hook of event {name!r}; add it with add_hook() first.") from None

    def hooks(self, name: str) -> list[HookFunction]:
        """The functions registered for event ``name``, in call order (a copy).

        Args:
            name: One of :data:`HOOK_EVENTS`.

        Returns:
            A new list of the registered functions.

        Raises:
            ValueError: If ``name`` is not a known event.
        """
        self._check_name(name)
        return list(self._hooks[name])

    @staticmethod
    def _check_name(name: str) -> None:
        if name not in HOOK_EVENTS:
            raise ValueError(f"Unknown hook event {name!r}; valid events are: {', '.join(HOOK_EVENTS)}.")

    def _run(
        self,
        name: str,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        batch_idx: int | None,
        kwargs: Callable[[], dict[str, Any]] | None = None,
    ) -> None:
        functions = self._hooks[name]
        if not functions:
            return
        state = {
            "stage": name.split("_", 1)[0],
            "epoch": trainer.current_epoch,
            "iteration": trainer.global_step,
            "global_step": trainer.global_step,
            "batch_idx": batch_idx,
            "trainer": trainer,
            "module": pl_module,
        }
        arguments = kwargs() if kwargs is not None else {}
        for function in list(functions):
            function(state, **arguments)

    @staticmethod
    def _stage_metrics(trainer: pl.Trainer, stage: str) -> dict[str, Any]:
        # Lightning keeps step values of validation logs out of callback_metrics; logged_metrics has them.
        logged = {**trainer.logged_metrics, **trainer.callback_metrics}
        return {key: value for key, value in logged.items() if key.startswith(stage)}

    def _capture_forward(self, module: torch.nn.Module, args: Any, output: Any) -> None:
        self._last_output = output

    @override
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if self._forward_handle is None:
            self._forward_handle = pl_module.register_forward_hook(self._capture_forward)

    @override
    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if self._forward_handle is not None:
            self._forward_handle.remove()
            self._forward_handle = None
        self._last_output = None
        self._last_loss = None

    @override
    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._run("train_begin", trainer, pl_module, None)

    @override
    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._run("train_end", trainer, pl_module, None)

    @override
    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        self._last_output = None
        self._last_loss = None
        self._run("train_pre_forward", trainer, pl_module, batch_idx, lambda: {"sample": batch})

    def _train_kwargs(self, trainer: pl.Trainer) -> dict[str, Any]:
        return {"metric": self._stage_metrics(trainer, "train"), "loss": self._last_loss, "output": self._last_output}

    @override
    def on_before_backward(self, trainer: pl.Trainer, pl_module: pl.LightningModule, loss: torch.Tensor) -> None:
        if not trainer.training:
            return
        self._last_loss = loss
        self._run("train_forward", trainer, pl_module, trainer.fit_loop.batch_idx, lambda: self._train_kwargs(trainer))

    @override
    def on_after_backward(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.training:
            return
        self._run("train_backward", trainer, pl_module, trainer.fit_loop.batch_idx, lambda: self._train_kwargs(trainer))

    @override
    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: STEP_OUTPUT, batch: Any, batch_idx: int
    ) -> None:
        # Drop references to the step's tensors (and their graphs) as soon as the step is over.
        self._last_output = None
        self._last_loss = None

    @override
    def on_validation_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.sanity_checking:
            self._run("val_begin", trainer, pl_module, None)

    @override
    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.sanity_checking:
            self._run("val_end", trainer, pl_module, None)

    @override
    def on_validation_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int, dataloader_idx: int = 0
    ) -> None:
        self._last_output = None
        if not trainer.sanity_checking:
            self._run("val_pre_forward", trainer, pl_module, batch_idx, lambda: {"sample": batch})

    @override
    def on_validation_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: STEP_OUTPUT,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        if not trainer.sanity_checking:
            self._run("val_forward", trainer, pl_module, batch_idx, lambda: self._val_kwargs(trainer, outputs))
        self._last_output = None

    def _val_kwargs(self, trainer: pl.Trainer, outputs: STEP_OUTPUT) -> dict[str, Any]:
        loss = outputs.get("loss") if isinstance(outputs, Mapping) else outputs
        output = self._last_output
        if output is None and isinstance(outputs, Mapping):
            output = outputs.get("output")
        return {"metric": self._stage_metrics(trainer, "val"), "loss": loss, "output": output}

    def __getstate__(self) -> dict[str, Any]:
        # The forward-hook handle and the step's tensors belong to one process; ddp_spawn pickles callbacks.
        state = self.__dict__.copy()
        state.update(_forward_handle=None, _last_output=None, _last_loss=None)
        return state
