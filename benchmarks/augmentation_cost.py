"""Cost of the full CPU augmentation pipeline relative to decoding the JPEG alone.

Builds a few hundred ~500x375 JPEG photos from scikit-learn's sample images, then measures per image in
one process (OpenCV single-threaded, as in a loader worker):

- ``decode``: ``cv2.imdecode`` at full size (the reference);
- ``pipeline``: ``ClassificationWorker.prepare`` with ``AUGMENTATION_TRAIN`` to 224x224 (parameter draws,
  reduced decode when possible, one warp, pixel ops, CHW RGB write);
- each stage on its own.

Stages take turns in blocks of ``--block`` consecutive images (25 by default: each stage runs back to back
as in a loader worker; ``--block 1`` switches stage at every image, which leaves each stage's caches full
of the other stages' data and charges the pipeline, the largest working set, ~0.1 ms more per image).

The bar (SPEC section 5): pipeline <= 1.6x decode. Run: ``python benchmarks/augmentation_cost.py``.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import sklearn.datasets

from crumpets_lightning.data.augment.augmentation import rotate_and_resize
from crumpets_lightning.data.augment.decode import _decode, decode_image
from crumpets_lightning.data.augment.pixel_ops import apply_pixel_ops_chw, noise_pool
from crumpets_lightning.data.augment.presets import AUGMENTATION_TRAIN
from crumpets_lightning.data.augment.record import AUGMENTATION_SPEC, augmentation_row
from crumpets_lightning.data.workers.image import _FAST_DCT, _FAST_UPSAMPLE, ClassificationWorker

__all__ = ["main", "make_jpegs"]

_SIZE = 224


def make_jpegs(count: int, seed: int = 0, height: int = 375, width: int = 500) -> list[bytes]:
    """``count`` JPEG photos of ``height x width``: random crops/flips of scikit-learn's sample images."""
    folder = Path(sklearn.datasets.__file__).parent / "images"
    photos = [cv2.imread(str(path)) for path in sorted(folder.glob("*.jpg"))]
    rng = np.random.default_rng(seed)
    out = []
    for i in range(count):
        photo = photos[i % len(photos)]
        y = int(rng.integers(0, photo.shape[0] - height + 1))
        x = int(rng.integers(0, photo.shape[1] - width + 1))
        crop = photo[y : y + height, x : x + width]
        if rng.random() < 0.5:
            crop = crop[:, ::-1]
        ok, encoded = cv2.imencode(".jpg", np.ascontiguousarray(crop), [cv2.IMWRITE_JPEG_QUALITY, 90])
        assert ok
        out.append(encoded.tobytes())
    return out


def _interleaved_ms(stages: list[Callable[[int], object]], count: int, repeats: int, block: int = 1) -> list[float]:
    """CPU ms per item of each stage; stages take turns so that machine load hits them alike.

    Each stage runs on ``block`` consecutive items, then the next stage on the same items. ``block = 1``
    switches stage at every item: each stage then starts with caches full of the other stages' data, which
    hurts the pipeline (the largest working set) most. Larger blocks run each stage back to back as a loader
    worker does (one sample after the other, decode and augmentation sharing the caches), while the turns
    stay short (``block`` x a few ms) so load changes still hit every stage alike.

    Time is this thread's CPU time (``time.thread_time``): on a shared machine wall time also counts the
    waits while other processes run, which hit long stages more than short ones. Each item's time per stage
    is the best of ``repeats`` runs.
    """
    best = np.full((len(stages), count), np.inf)
    clock = time.thread_time
    for _ in range(repeats):
        for first in range(0, count, block):
            items = range(first, min(first + block, count))
            for s, fn in enumerate(stages):
                for i in items:
                    start = clock()
                    fn(i)
                    best[s, i] = min(best[s, i], clock() - start)
    return (best.mean(axis=1) * 1000.0).tolist()


def main(argv: list[str] | None = None) -> None:
    """Print a table of ms/image per stage and the pipeline / decode ratio."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=300)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument(
        "--block", type=int, default=25, help="consecutive images per stage turn (1: switch stage every image)"
    )
    args = parser.parse_args(argv)
    cv2.setNumThreads(1)
    jpegs = make_jpegs(args.images)
    n = len(jpegs)
    noise_pool()  # per-process setup, not per image

    worker = ClassificationWorker(((3, _SIZE, _SIZE), np.uint8), ((1,), np.int64), image_rng=AUGMENTATION_TRAIN)
    specs = worker.buffer_specs
    buffers = {key: np.zeros(shape, dtype) for key, (shape, dtype, _) in specs.items()}
    rngs = [np.random.default_rng(i) for i in range(n)]
    samples = [{"image": data, "label": i % 10} for i, data in enumerate(jpegs)]
    neutral = np.asarray(AUGMENTATION_SPEC[2])

    def pipeline(i: int) -> None:
        buffers["augmentation"][...] = neutral
        worker.rng = rngs[i]  # the loader makes one generator per sample; not part of the cost
        worker.sample_key = i
        worker.prepare(samples[i], {}, buffers)

    decoded = [decode_image(data) for data in jpegs]
    warped = [
        rotate_and_resize(im, 10.0, (_SIZE, _SIZE), 1.1, 1.05, (0.3, -0.2), cv2.INTER_LINEAR, 0, True, False, 0.05)
        for im in decoded
    ]
    chw = [np.ascontiguousarray(im.transpose(2, 0, 1)) for im in warped]
    scratch = np.empty_like(chw[0])
    noise_rng = np.random.default_rng(0)
    rows = {
        "gamma + colour + contrast LUT": augmentation_row(True, 0.8, (0.9, 1.0, 1.1), 0.3),
        "noise from the pool": augmentation_row(noise=0.05),
        "blur (sigma 0.6 px)": augmentation_row(blur=0.6 / _SIZE),
    }

    def pixel_stage(row: np.ndarray) -> Callable[[int], object]:
        def run(i: int) -> None:
            np.copyto(scratch, chw[i])
            apply_pixel_ops_chw(scratch, row, noise_rng)

        return run

    stages: list[tuple[str, Callable[[int], object]]] = [
        (
            "decode (cv2.imdecode, full size)",
            lambda i: cv2.imdecode(np.frombuffer(jpegs[i], np.uint8), cv2.IMREAD_COLOR),
        ),
        (
            "decode as the pipeline does (RGB, fast IDCT + upsampling)",
            lambda i: _decode(jpegs[i], "rgb", fast_dct=_FAST_DCT, fast_upsample=_FAST_UPSAMPLE),
        ),
        ("draw parameters (AUGMENTATION_TRAIN)", lambda i: AUGMENTATION_TRAIN((_SIZE, _SIZE), rngs[i])),
        (
            "one warp, all geometry (from full size)",
            lambda i: rotate_and_resize(
                decoded[i],
                10.0,
                (_SIZE, _SIZE),
                1.1,
                1.05,
                (0.3, -0.2),
                cv2.INTER_LINEAR,
                0,
                True,
                False,
                0.05,
            ),
        ),
        *[(name + " (in place, CHW)", pixel_stage(row)) for name, row in rows.items()],
        ("HWC -> CHW planes (cv2.split)", lambda i: cv2.split(warped[i], list(buffers["image"]))),
        ("full pipeline (ClassificationWorker.prepare)", pipeline),
    ]
    for _, fn in stages:  # warm up: pools, caches, code paths
        fn(0)
    times = _interleaved_ms([fn for _, fn in stages], n, args.repeats, max(1, args.block))
    results = list(zip([name for name, _ in stages], times))
    decode_ms = results[0][1]
    print(
        f"{n} JPEGs of 500x375 -> {_SIZE}x{_SIZE}, one process, cv2 threads = 1, "
        f"CPU time, best of {args.repeats} per image, stages take turns every {max(1, args.block)} images\n"
    )
    print(f"{'stage':<60} {'ms/image':>9} {'x decode':>9}")
    for name, ms in results:
        print(f"{name:<60} {ms:>9.3f} {ms / decode_ms:>9.2f}")
    ratio = results[-1][1] / decode_ms
    verdict = "meets" if ratio <= 1.6 else "MISSES"
    print(f"\npipeline / decode = {ratio:.2f} ({verdict} the 1.6x bar)")


if __name__ == "__main__":
    main()
