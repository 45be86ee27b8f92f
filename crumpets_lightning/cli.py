"""The ``crumpets-lightning`` console script.

Subcommands:

* ``fit | validate | test | predict``: ``LightningCLI`` with :class:`CrumpetsDataModule` as the data class (so
  ``--help`` lists its arguments) and any :class:`CrumpetsModule` subclass as the model (``--model MyModule``
  or ``class_path`` in a YAML config).
* ``pack SRC_DIR OUT.msgpack``: an image folder (``class_name/*.jpg``) to a msgpack file of samples.
* ``gallery IMAGE -o out.png``: a PNG grid of augmentations of a real image.
* ``bench``: loader throughput against the torch ``DataLoader`` doing the same work.
* ``demo [--output DIR] [--epochs N]``: the main job, trains on the embedded digits data set.

``bench`` and ``demo`` live in :mod:`crumpets_lightning.tools` (imported only when run) and need the ``demo``
extra (scikit-learn). Mistakes in the command line, config or settings are one line on stderr with exit status 2
(``--debug`` shows the traceback); errors while a run trains or evaluates keep their traceback.

Example::

    crumpets-lightning fit --config crumpets_lightning/configs/demo.yaml --trainer.max_epochs=3
    crumpets-lightning pack photos/ photos.msgpack
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

__all__ = ["DEBUG_ENV", "main", "main_gallery", "main_pack", "make_cli"]

#: Environment variable that makes the console script raise errors with their traceback (like ``--debug``).
DEBUG_ENV = "CRUMPETS_LIGHTNING_DEBUG"

_LIGHTNING_COMMANDS = ("fit", "validate", "test", "predict")

_USAGE = """usage: crumpets-lightning COMMAND [ARGS]

commands:
  fit | validate | test | predict   train or evaluate with LightningCLI (see `crumpets-lightning fit --help`)
  pack SRC_DIR OUT.msgpack          pack an image folder (class_name/*.jpg) into a msgpack file of samples
  gallery IMAGE -o OUT.png          write a PNG grid of augmentations of IMAGE
  bench                             loader throughput against the torch DataLoader
  demo [--output DIR] [--epochs N]  train a small CNN on the embedded digits data set

options:
  --debug                           show the traceback of an error (also CRUMPETS_LIGHTNING_DEBUG=1)
"""


def make_cli(args: Sequence[str] | None = None, run: bool = True, **kwargs: Any) -> Any:
    """Build (and by default run) the ``LightningCLI`` for ``fit|validate|test|predict``.

    See :func:`crumpets_lightning.tools.lightning_cli.make_cli` (this is the same function, imported on use).

    Args:
        args: command-line arguments after the program name (e.g. ``["fit", "--config", "demo.yaml"]``);
            ``None`` reads ``sys.argv``.
        run: run the subcommand; ``False`` only parses and instantiates (then ``args`` has no subcommand).
        **kwargs: further ``LightningCLI`` keyword arguments.

    Returns:
        The ``LightningCLI`` instance (``.trainer``, ``.model``, ``.datamodule``).
    """
    from crumpets_lightning.tools.lightning_cli import make_cli as _make_cli

    return _make_cli(args, run=run, **kwargs)


def main_pack(argv: Sequence[str]) -> int:
    """``crumpets-lightning pack SRC_DIR OUT.msgpack``: image folder to msgpack file, with a progress bar.

    Args:
        argv: the arguments after ``pack``.

    Returns:
        The exit status (0 on success).

    Raises:
        FileNotFoundError: ``SRC_DIR`` is not a directory.
    """
    parser = argparse.ArgumentParser(
        prog="crumpets-lightning pack",
        description="Pack an image folder (SRC_DIR/class_name/*.jpg) into a msgpack file of samples "
        "{'key', 'image' (encoded bytes), 'label' (class index)} readable by MsgpackDataset.",
    )
    parser.add_argument("src_dir", type=Path, help="image folder with one sub-folder per class")
    parser.add_argument("out", type=Path, help="msgpack file to write")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    ns = parser.parse_args(list(argv))
    if not ns.src_dir.is_dir():
        raise FileNotFoundError(
            f"SRC_DIR {str(ns.src_dir)!r} is not a directory: pass an image folder with one sub-folder per class "
            "(SRC_DIR/class_name/*.jpg)"
        )

    from tqdm import tqdm

    from crumpets_lightning.data.sources import ImageFolderDataset, write_msgpack

    dataset = ImageFolderDataset(ns.src_dir)
    with tqdm(total=len(dataset), unit="img", desc=f"packing {ns.src_dir}", disable=ns.quiet) as bar:

        def samples() -> Any:
            for i in range(len(dataset)):
                yield dataset[i]
                bar.update(1)

        count = write_msgpack(samples(), ns.out)
    print(f"wrote {count} samples of {len(dataset.classes)} classes {dataset.classes} to {ns.out}")
    return 0


def main_gallery(argv: Sequence[str]) -> int:
    """``crumpets-lightning gallery IMAGE -o OUT.png``: a labelled grid of augmentations of a real image.

    Args:
        argv: the arguments after ``gallery``.

    Returns:
        The exit status (0 on success).

    Raises:
        FileNotFoundError: ``IMAGE`` is not a file.
    """
    parser = argparse.ArgumentParser(
        prog="crumpets-lightning gallery", description="Write a PNG grid of crumpets augmentations of IMAGE."
    )
    parser.add_argument("image", type=Path, help="an image file (JPEG/PNG)")
    parser.add_argument("-o", "--output", type=Path, default=Path("gallery.png"), help="PNG file to write")
    parser.add_argument("--size", type=int, default=224, help="side length of each panel in pixels")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random panels")
    ns = parser.parse_args(list(argv))
    if not ns.image.is_file():
        raise FileNotFoundError(f"IMAGE {str(ns.image)!r} is not a file: pass the path of a JPEG or PNG image")

    from crumpets_lightning.gallery import make_gallery

    path = make_gallery(ns.image, ns.output, size=ns.size, seed=ns.seed)
    print(f"wrote {path}")
    return 0


def _main_bench(argv: Sequence[str]) -> int:
    from crumpets_lightning.tools import bench

    return int(bench.main(list(argv)))


def _main_demo(argv: Sequence[str]) -> int:
    from crumpets_lightning.tools import demo, require_extra

    require_extra("sklearn", "demo", "crumpets-lightning demo (its data set comes from scikit-learn)")
    return demo.main(list(argv))


_SUBCOMMANDS: dict[str, Callable[[Sequence[str]], int]] = {
    "pack": main_pack,
    "gallery": main_gallery,
    "bench": _main_bench,
    "demo": _main_demo,
}


def _model_hint() -> str:
    """Which models ``--model`` accepts: the short names of the imported ``CrumpetsModule`` subclasses."""
    from crumpets_lightning.modules.module import CrumpetsModule

    found, stack = [], [CrumpetsModule]
    while stack:
        cls = stack.pop()
        found.append(cls.__name__)
        stack.extend(cls.__subclasses__())
    names = ", ".join(sorted(set(found)))
    return f"--model takes a CrumpetsModule subclass by import path (my_package.MyModel) or by short name: {names}"


def _raising_parser_kwargs() -> dict[str, Any]:
    """``LightningCLI`` parser arguments that make a parse error an exception (printed as one line by main)."""
    kwargs: dict[str, Any] = {"prog": "crumpets-lightning", "exit_on_error": False}
    for command in _LIGHTNING_COMMANDS:
        kwargs[command] = {"exit_on_error": False}
    return kwargs


def _debug_requested(args: list[str]) -> bool:
    """Whether the traceback of an error is wanted: ``--debug`` anywhere (removed from ``args``) or the env var."""
    debug = os.environ.get(DEBUG_ENV, "").strip() not in ("", "0", "false", "no")
    while "--debug" in args:
        args.remove("--debug")
        debug = True
    return debug


def _one_line(error: BaseException) -> str:
    """``error`` as one line: its type and its message with every run of whitespace made one space."""
    message = " ".join(str(error).split()) or "(no message)"
    return f"{type(error).__name__}: {message}"


def _is_configuration_error(error: BaseException) -> bool:
    """Settings found not to work together when the run started (ours, or Lightning's)."""
    from lightning.fabric.utilities.exceptions import MisconfigurationException

    from crumpets_lightning.data.errors import ConfigurationError

    return isinstance(error, (ConfigurationError, MisconfigurationException))


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``crumpets-lightning`` console script.

    A mistake in the command line, the config or the settings (found while parsing, building the classes, or
    as a :class:`~crumpets_lightning.data.errors.ConfigurationError` or Lightning ``MisconfigurationException``
    when the run starts) is printed as one line on stderr (its type, its message and how to see the
    traceback) and gives exit status 2; ``--debug`` (anywhere on the command line) or
    ``CRUMPETS_LIGHTNING_DEBUG=1`` raises it with its traceback instead. Any other error raised while the
    subcommand runs (in a model's ``training_step``, a worker, ...) keeps its traceback.

    Args:
        argv: arguments after the program name; ``None`` reads ``sys.argv[1:]``.

    Returns:
        The exit status.
    """
    args = list(sys.argv[1:] if argv is None else argv)
    debug = _debug_requested(args)
    if not args or args[0] in ("-h", "--help"):
        print(_USAGE)
        return 0 if args else 2
    command = args[0]
    if command not in _SUBCOMMANDS and command not in _LIGHTNING_COMMANDS:
        print(f"crumpets-lightning: unknown command {command!r}\n\n{_USAGE}", file=sys.stderr)
        return 2
    running: list[str] = []
    try:
        if command in _SUBCOMMANDS:
            return _SUBCOMMANDS[command](args[1:])
        make_cli(args, parser_kwargs=_raising_parser_kwargs(), on_run=running.append)
        return 0
    except Exception as error:
        if debug or (running and not _is_configuration_error(error)):
            raise  # a failure while training or evaluating (a bug, a bad sample, ...) keeps its traceback
        hint = "add --debug to see the traceback"
        if type(error).__name__ == "ArgumentError" and command in _LIGHTNING_COMMANDS:
            hint = f"run `crumpets-lightning {command} --help` for the accepted options"
            if 'Parser key "model"' in str(error):
                hint = f"{_model_hint()}; {hint}"
        print(f"crumpets-lightning {command}: {_one_line(error)} ({hint})", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
