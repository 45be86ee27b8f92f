"""Simple data loader example without datadings (port of crumpets' ``examples/dataloader_simple.py``).

The crumpets example prepares the ``tinyset`` folder (ImageNet layout: ``tinyset/<class>/<n>.jpg``), packs
every image with its class id into msgpack bytes (what crumpets workers expect) and runs a
``TurboDataLoader`` over them. Here the tiny set is built first from the two photos scikit-learn ships
(``china.jpg`` and ``flower.jpg``): a few random crops of each photo form one class. Nothing is downloaded.

Run::

    python examples/dataloader_simple.py --epochs 3 --batch-size 2 --nworkers 2 --grid batch.png
"""

from __future__ import annotations

import argparse
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

import cv2
import msgpack
import numpy as np
import sklearn.datasets

from crumpets_lightning.data import AUGMENTATION_TRAIN, ClassificationWorker, TurboDataLoader

PHOTOS = ("china", "flower")


def make_tinyset(dsdir: str | os.PathLike[str], per_class: int = 4, seed: int = 0) -> Path:
    """Write ``dsdir/<photo>/<n>.jpg``: ``per_class`` random crops of each scikit-learn sample photo.

    Args:
        dsdir: Folder to create the class folders in.
        per_class: Images per class.
        seed: Seed of the crop positions and sizes.

    Returns:
        The dataset folder.
    """
    rng = np.random.default_rng(seed)
    images_dir = Path(sklearn.datasets.__file__).parent / "images"
    root = Path(dsdir)
    for name in PHOTOS:
        photo = cv2.imread(str(images_dir / f"{name}.jpg"), cv2.IMREAD_COLOR)
        if photo is None:
            raise FileNotFoundError(f"scikit-learn's sample photo {name}.jpg is missing from {images_dir}")
        (root / name).mkdir(parents=True, exist_ok=True)
        height, width = photo.shape[:2]
        for index in range(per_class):
            side = int(rng.integers(height // 2, height))
            top = int(rng.integers(0, height - side + 1))
            left = int(rng.integers(0, width - side + 1))
            cv2.imwrite(str(root / name / f"{index + 1}.jpg"), photo[top : top + side, left : left + side])
    return root


def prepare_dataset(dsdir: str | os.PathLike[str]) -> list[bytes]:
    """Pack the images of an ImageNet-style folder with their class ids, as crumpets workers expect.

    Args:
        dsdir: Folder with one subfolder of images per class (class ids follow the sorted folder names).

    Returns:
        One msgpack-packed ``{"image": <encoded bytes>, "label": <class id>}`` per image.
    """
    iterable = []
    class_dirs = sorted(p for p in Path(dsdir).iterdir() if p.is_dir())
    for class_id, class_dir in enumerate(class_dirs):
        for image_path in sorted(class_dir.iterdir()):
            sample = {"image": image_path.read_bytes(), "label": class_id}
            iterable.append(msgpack.packb(sample, use_bin_type=True))
    return iterable


def save_grid(images: np.ndarray, path: str | os.PathLike[str]) -> None:
    """Write a batch of CHW RGB uint8 images side by side as one PNG.

    Args:
        images: Array ``[B, C, H, W]``.
        path: Output PNG file.
    """
    row = np.concatenate([np.transpose(image, (1, 2, 0)) for image in images], axis=1)
    cv2.imwrite(os.fspath(path), cv2.cvtColor(np.ascontiguousarray(row), cv2.COLOR_RGB2BGR))


def main(argv: Sequence[str] | None = None) -> int:
    """Build the tiny set, then load it for a few epochs and print what each batch holds.

    Args:
        argv: Command-line arguments (default: ``sys.argv[1:]``).

    Returns:
        The exit status.
    """
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--nworkers", type=int, default=2)
    parser.add_argument("--image-size", type=int, default=224, help="side of the square output images")
    parser.add_argument("--per-class", type=int, default=4, help="images per class in the tiny set")
    parser.add_argument("--dsdir", type=Path, default=None, help="where to build tinyset (default: a temp dir)")
    parser.add_argument("--grid", type=Path, default=None, help="save the last batch as a PNG here")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="tinyset-") as scratch:
        dsdir = make_tinyset(args.dsdir or Path(scratch) / "tinyset", args.per_class, args.seed)
        iterable = prepare_dataset(dsdir)
        print(f"tinyset: {len(iterable)} images in {dsdir}")

        size = args.image_size
        loader = TurboDataLoader(
            iterable,
            args.batch_size,
            # AUGMENTATION_TRAIN draws a random augmentation per image; leave image_rng out for none
            ClassificationWorker(((3, size, size), np.uint8), ((1,), np.int64), image_rng=AUGMENTATION_TRAIN),
            args.nworkers,
            shuffle=True,
            seed=args.seed,
        )
        last_images = None
        with loader:
            for epoch in range(args.epochs):
                for iteration, mini_batches in loader:
                    for sample in mini_batches:
                        image, label = sample["image"], sample["label"]
                        print(
                            f"epoch {epoch} iteration {iteration}: image {tuple(image.shape)} {image.dtype},"
                            f" labels {label.ravel().tolist()}"
                        )
                        last_images = np.array(image)  # a copy: the batch's shared memory is reused
        if args.grid is not None and last_images is not None:
            save_grid(last_images, args.grid)
            print(f"wrote {args.grid}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
