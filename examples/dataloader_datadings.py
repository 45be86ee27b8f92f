"""Data loader example on a msgpack file (port of crumpets' ``examples/dataloader_datadings.py``).

crumpets reads data sets that datadings wrote: one file of concatenated msgpack maps with ``key``, ``image``
(encoded bytes) and ``label``. ``MsgpackDataset`` reads such a file with random access (an offset index, no
decoding), so the loader can shuffle it and its workers read the samples themselves. Pass any datadings file
or one written by ``crumpets-lightning pack IMAGE_FOLDER OUT.msgpack``; without ``--data`` the example
writes the scikit-learn handwritten digits (upscaled to 32x32 JPEGs) into a temporary msgpack file first.

Run::

    python examples/dataloader_datadings.py --epochs 2 --batch-size 16 --nworkers 2
    python examples/dataloader_datadings.py --data train.msgpack --image-size 224
"""

from __future__ import annotations

import argparse
import tempfile
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from crumpets_lightning.data import AUGMENTATION_TRAIN, ClassificationWorker, MsgpackDataset, TurboDataLoader


def main(argv: Sequence[str] | None = None) -> int:
    """Load a msgpack file for a few epochs; print batch shapes and how often each label came.

    Args:
        argv: Command-line arguments (default: ``sys.argv[1:]``).

    Returns:
        The exit status.
    """
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=None, help="msgpack file of samples (default: the digits)")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--nworkers", type=int, default=2)
    parser.add_argument("--image-size", type=int, default=32, help="side of the square output images")
    parser.add_argument("--limit", type=int, default=None, help="use only this many digits (no --data)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="digits-") as scratch:
        path = args.data
        if path is None:
            from crumpets_lightning.tools.demo import build_digits_dataset

            path = build_digits_dataset(scratch, image_size=32, limit=args.limit).train
        dataset = MsgpackDataset(path)
        print(f"{path}: {len(dataset)} samples")

        size = args.image_size
        loader = TurboDataLoader(
            dataset,
            args.batch_size,
            ClassificationWorker(((3, size, size), np.uint8), ((1,), np.int64), image_rng=AUGMENTATION_TRAIN),
            args.nworkers,
            shuffle=True,
            seed=args.seed,
        )
        print(f"{len(loader)} batches per epoch")
        with loader:
            for epoch in range(args.epochs):
                labels: Counter[int] = Counter()
                for iteration, mini_batches in loader:
                    for sample in mini_batches:
                        labels.update(sample["label"].ravel().tolist())
                        if iteration % 10 == 1:
                            image = sample["image"]
                            print(f"epoch {epoch} iteration {iteration}: image {tuple(image.shape)} {image.dtype}")
                counts = ", ".join(f"{label}: {count}" for label, count in sorted(labels.items()))
                print(f"epoch {epoch}: {sum(labels.values())} samples, labels {{{counts}}}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
