"""The ``LightningCLI`` behind ``crumpets-lightning fit | validate | test | predict``.

:class:`CrumpetsCLI` is ``LightningCLI`` with :class:`~crumpets_lightning.data.CrumpetsDataModule` as the data
class and any :class:`~crumpets_lightning.modules.CrumpetsModule` subclass as the model, plus:

- short class names: the package's modules (``DemoNet``), losses, metrics, LR policies, workers and RNGs are
  imported before parsing, so ``--model DemoNet``, ``--model.metric AccuracyMetric``,
  ``--data.worker ClassificationWorker`` or ``--data.train_rng MixtureRNG`` resolve without a dotted path (and
  ``--model.loss CrossEntropyLoss`` is the package's loss, not torch's of the same name);
- ``--help`` spells out the preset that a ``None`` default stands for (``train_rng`` is ``AUGMENTATION_TRAIN``,
  ``val_params`` is ``INPUT_PARAMS_VAL``).
"""

from __future__ import annotations

import importlib
import inspect
import sys
import warnings
from collections.abc import Callable, Sequence
from typing import Any

from lightning.pytorch.cli import LightningArgumentParser, LightningCLI
from typing_extensions import override

__all__ = ["SHORT_NAME_MODULES", "CrumpetsCLI", "expand_short_names", "make_cli", "short_names"]

#: Modules whose classes may be named by their short class name on the command line and in YAML.
SHORT_NAME_MODULES = (
    "crumpets_lightning.demo",
    "crumpets_lightning.modules.module",
    "crumpets_lightning.modules.losses",
    "crumpets_lightning.modules.metrics",
    "crumpets_lightning.modules.policies",
    "crumpets_lightning.modules.randomizer",
    "crumpets_lightning.modules.utils",
    "crumpets_lightning.data.workers.base",
    "crumpets_lightning.data.workers.image",
    "crumpets_lightning.data.augment.rng",
    "crumpets_lightning.callbacks.hooks",
    "crumpets_lightning.callbacks.snapshot",
    "crumpets_lightning.callbacks.json_logger",
    "crumpets_lightning.callbacks.data_wait",
)


def short_names() -> dict[str, str]:
    """Import :data:`SHORT_NAME_MODULES` (so jsonargparse finds their classes as subclasses by short name).

    Returns:
        Short class name -> full import path of every public class those modules define.
    """
    names: dict[str, str] = {}
    for module_name in SHORT_NAME_MODULES:
        module = importlib.import_module(module_name)
        for attr in getattr(module, "__all__", ()):
            value = getattr(module, attr, None)
            if inspect.isclass(value) and value.__module__ == module_name:
                names[attr] = f"{module_name}.{attr}"
    return names


def expand_short_names(args: Sequence[str], names: dict[str, str]) -> list[str]:
    """Replace option values that are a short name in ``names`` by the full path.

    jsonargparse resolves a short name itself unless two imported classes share it: ``CrossEntropyLoss``,
    ``MSELoss``, ``L1Loss``, ``NLLLoss`` and ``ReduceLROnPlateau`` exist in torch too. On this command line
    the package's class wins (name torch's by its full path: ``torch.nn.CrossEntropyLoss``).

    Args:
        args: the command line after the program name.
        names: short name -> full path (from :func:`short_names`).

    Returns:
        The command line with those values expanded.
    """
    out: list[str] = []
    for i, arg in enumerate(args):
        if arg.startswith("--") and "=" in arg:
            option, value = arg.split("=", 1)
            out.append(f"{option}={names.get(value, value)}")
        elif i > 0 and args[i - 1].startswith("--") and "=" not in args[i - 1] and arg in names:
            out.append(names[arg])
        else:
            out.append(arg)
    return out


def _preset_help() -> dict[str, str]:
    from crumpets_lightning.data.augment.presets import AUGMENTATION_TRAIN, INPUT_PARAMS_VAL

    return {
        "data.train_rng": f"default null means the AUGMENTATION_TRAIN preset = {AUGMENTATION_TRAIN!r}",
        "data.val_params": f"default null means the INPUT_PARAMS_VAL preset = {INPUT_PARAMS_VAL!r}",
    }


class CrumpetsCLI(LightningCLI):
    """``LightningCLI`` that names the presets behind ``None`` defaults in ``--help``.

    Build it with :func:`make_cli`, which also imports the classes that may be named by short name.
    """

    def __init__(self, *args: Any, on_run: Callable[[str], None] | None = None, **kwargs: Any) -> None:
        """``LightningCLI``'s arguments, plus ``on_run``: called with the subcommand's name when it starts
        running (parsing and instantiation are over)."""
        self._on_run = on_run
        super().__init__(*args, **kwargs)

    def _started(self) -> None:
        if self._on_run is not None:
            self._on_run(str(self.subcommand))

    # LightningCLI's public hooks, called right before the trainer method runs
    def before_fit(self) -> None:
        """Report that ``fit`` starts."""
        self._started()

    before_validate = before_test = before_predict = before_fit

    @override
    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        """Append the preset a ``None`` default stands for to the help of those arguments.

        Args:
            parser: the subcommand's parser.
        """
        presets = _preset_help()
        for action in parser._actions:
            extra = presets.get(action.dest)
            if extra is not None:
                action.help = f"{(action.help or '').rstrip()} ({extra})"


def make_cli(args: Sequence[str] | None = None, run: bool = True, **kwargs: Any) -> Any:
    """Build (and by default run) the ``LightningCLI`` for ``fit|validate|test|predict``.

    Args:
        args: command-line arguments after the program name (e.g. ``["fit", "--config", "demo.yaml"]``);
            ``None`` reads ``sys.argv``.
        run: run the subcommand; ``False`` only parses and instantiates (then ``args`` has no subcommand).
        **kwargs: further ``LightningCLI`` keyword arguments.

    Returns:
        The ``LightningCLI`` instance (``.trainer``, ``.model``, ``.datamodule``).
    """
    from crumpets_lightning.data.datamodule import CrumpetsDataModule
    from crumpets_lightning.modules.module import CrumpetsModule

    args = expand_short_names(sys.argv[1:] if args is None else args, short_names())
    kwargs.setdefault("subclass_mode_model", True)
    kwargs.setdefault("save_config_kwargs", {"overwrite": True})
    kwargs.setdefault("parser_kwargs", {"prog": "crumpets-lightning"})
    with warnings.catch_warnings():
        # explicit args replace sys.argv on purpose (main() and the demo pass them); do not warn about it
        warnings.filterwarnings("ignore", message=".*LightningCLI's args parameter is intended.*")
        return CrumpetsCLI(CrumpetsModule, CrumpetsDataModule, args=args, run=run, **kwargs)
