"""The ``crumpets-lightning`` console script.

Subcommands:

* ``fit | validate | test | predict``: ``LightningCLI`` with :class:`CrumpetsDataModule` as the data class (so
  ``--help`` lists its arguments) and any :class:`CrumpetsModule` subclass as the model (``--model MyModule``
  or ``class_path`` in a YAML config).
* ``pack SRC_DIR OUT.msgpack``: an image folder (``class_name/*.jpg``) to a msgpack file of samples.
* ``gallery IMAGE -o out.png``: a PNG grid of augmentations of a real image.
* ``bench``: loader throughput against the torch ``DataLoader`` doing the same work.
* ``demo [--output DIR] [--epochs N]``: the main job, trains on the embedded digits data set.

Example::

    crumpets-lightning fit --config crumpets_lightning/configs/demo.yaml --trainer.max_epochs=3
    crumpets-lightning pack photos/ photos.msgpack
"""

from __future__ import annotations

import argparse
import sys
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

__all__ = ["main", "main_gallery", "main_pack", "make_cli"]

_LIGHTNING_COMMANDS = ("fit", "validate", "test", "predict")

_USAGE = """usage: crumpets-lightning COMMAND [ARGS]

commands:
  fit | validate | test | predict   train or evaluate with LightningCLI (see `crumpets-lightning fit --help`)
  pack SRC_DIR OUT.msgpack          pack an image folder (class_name/*.jpg) into a msgpack file of samples
  gallery IMAGE -o OUT.png          write a PNG grid of augmentations of IMAGE
  bench                             loader throughput against the torch DataLoader
  demo [--output DIR] [--epochs N]  train a small CNN on the embedded digits data set
"""


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
    from lightning.pytorch.cli import LightningCLI

    from crumpets_lightning.data.datamodule import CrumpetsDataModule
    from crumpets_lightning.modules.module import CrumpetsModule

    kwargs.setdefault("subclass_mode_model", True)
    kwargs.setdefault("save_config_kwargs", {"overwrite": True})
    kwargs.setdefault("parser_kwargs", {"prog": "crumpets-lightning"})
    if args is None:
        return LightningCLI(CrumpetsModule, CrumpetsDataModule, run=run, **kwargs)
    with warnings.catch_warnings():
        # explicit args replace sys.argv on purpose (main() and the demo pass them); do not warn about it
        warnings.filterwarnings("ignore", message=".*LightningCLI's args parameter is intended.*")
        return LightningCLI(CrumpetsModule, CrumpetsDataModule, args=list(args), run=run, **kwargs)


def main_pack(argv: Sequence[str]) -> int:
    """``crumpets-lightning pack SRC_DIR OUT.msgpack``: image folder to msgpack file, with a progress bar.

    Args:
        argv: the arguments after ``pack``.

    Returns:
        The exit status (0 on success).
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

    from tqdm import tqdm

    from crumpets_lightning.data.sources.datasets import ImageFolderDataset, write_msgpack

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
        parser.error(f"image {str(ns.image)!r} does not exist")

    from crumpets_lightning.gallery import make_gallery

    path = make_gallery(ns.image, ns.output, size=ns.size, seed=ns.seed)
    print(f"wrote {path}")
    return 0


def _main_bench(argv: Sequence[str]) -> int:
    from crumpets_lightning.bench import main as bench_main

    return int(bench_main(list(argv)))


def _main_demo(argv: Sequence[str]) -> int:
    from crumpets_lightning.demo import main as demo_main

    return demo_main(list(argv))


_SUBCOMMANDS: dict[str, Callable[[Sequence[str]], int]] = {
    "pack": main_pack,
    "gallery": main_gallery,
    "bench": _main_bench,
    "demo": _main_demo,
}


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``crumpets-lightning`` console script.

    Args:
        argv: arguments after the program name; ``None`` reads ``sys.argv[1:]``.

    Returns:
        The exit status.
    """
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help"):
        print(_USAGE)
        return 0 if args else 2
    command = args[0]
    if command in _SUBCOMMANDS:
        return _SUBCOMMANDS[command](args[1:])
    if command in _LIGHTNING_COMMANDS:
        make_cli(args)
        return 0
    print(f"crumpets-lightning: unknown command {command!r}\n\n{_USAGE}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
