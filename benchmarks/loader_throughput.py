"""Throughput of TurboDataLoader against torch's DataLoader doing the same decode + resize work.

Builds JPEG photos (~500x375) from scikit-learn's sample images (random crops, scales, flips), then runs
both loaders in interleaved rounds with the same number of worker processes and batch size, and prints a
table of images/s, their ratio and construct-to-first-batch time.

    python benchmarks/loader_throughput.py --images 300 --nworkers 2 --rounds 3
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import sklearn.datasets
import torch
import torch.utils.data

from crumpets_lightning.data.loader.loader import TurboDataLoader
from crumpets_lightning.data.workers.base import BufferWorker

SIZE = 224


def make_jpegs(count: int, seed: int = 0) -> list[bytes]:
    """``count`` JPEGs of about 500x375 cut from the sklearn photos."""
    folder = Path(sklearn.datasets.__file__).parent / "images"
    photos = [cv2.imread(str(folder / name)) for name in ("china.jpg", "flower.jpg")]
    rng = np.random.default_rng(seed)
    out = []
    for i in range(count):
        photo = photos[i % 2]
        h, w = photo.shape[:2]
        scale = rng.uniform(0.6, 1.0)
        ch, cw = int(h * scale), int(w * scale)
        y, x = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
        crop = photo[y : y + ch, x : x + cw]
        if rng.random() < 0.5:
            crop = crop[:, ::-1]
        crop = cv2.resize(crop, (500, 375), interpolation=cv2.INTER_AREA)
        ok, data = cv2.imencode(".jpg", crop, [cv2.IMWRITE_JPEG_QUALITY, 90])
        assert ok
        out.append(data.tobytes())
    return out


def decode(data: bytes) -> np.ndarray:
    """The work both loaders do per image: decode, resize, BGR HWC -> RGB CHW."""
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    image = cv2.resize(image, (SIZE, SIZE), interpolation=cv2.INTER_LINEAR)
    return np.ascontiguousarray(image[:, :, ::-1].transpose(2, 0, 1))


class DecodeWorker(BufferWorker):
    def __init__(self) -> None:
        super().__init__(image=((3, SIZE, SIZE), np.uint8), label=((1,), np.int64))

    def prepare(self, sample: dict[str, Any], batch: dict[str, list], buffers: dict[str, np.ndarray]) -> None:
        buffers["image"][...] = decode(sample["image"])
        buffers["label"][0] = sample["label"]


class DecodeDataset(torch.utils.data.Dataset):
    def __init__(self, samples: list[dict[str, Any]]) -> None:
        self.samples = samples

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> dict[str, Any]:
        cv2.setNumThreads(1)
        sample = self.samples[index]
        return {"image": torch.from_numpy(decode(sample["image"])), "label": torch.tensor([sample["label"]])}


def run_turbo(samples: list[dict[str, Any]], batch: int, nworkers: int) -> tuple[float, float]:
    start = time.perf_counter()
    loader = TurboDataLoader(samples, batch, DecodeWorker(), nworkers=nworkers, seed=0)
    first = None
    count = 0
    for _, mini_batches in loader:
        if first is None:
            first = time.perf_counter() - start
        count += len(mini_batches[0]["image"])
    elapsed = time.perf_counter() - start
    loader.stop()
    return count / elapsed, first or 0.0


def run_torch(samples: list[dict[str, Any]], batch: int, nworkers: int) -> tuple[float, float]:
    start = time.perf_counter()
    loader = torch.utils.data.DataLoader(
        DecodeDataset(samples), batch_size=batch, num_workers=nworkers, multiprocessing_context="fork"
    )
    first = None
    count = 0
    for item in loader:
        if first is None:
            first = time.perf_counter() - start
        count += len(item["image"])
    elapsed = time.perf_counter() - start
    return count / elapsed, first or 0.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=320)
    parser.add_argument("--nworkers", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    args = parser.parse_args()
    cv2.setNumThreads(1)
    samples = [{"image": data, "label": i % 10} for i, data in enumerate(make_jpegs(args.images))]
    results: dict[str, list[tuple[float, float]]] = {"turbo": [], "torch": []}
    for _ in range(args.rounds):  # interleaved, so drift in machine load hits both alike
        results["turbo"].append(run_turbo(samples, args.batch_size, args.nworkers))
        results["torch"].append(run_torch(samples, args.batch_size, args.nworkers))
    summary = {
        name: {
            "images_per_s": statistics.median(r[0] for r in runs),
            "first_batch_s": statistics.median(r[1] for r in runs),
        }
        for name, runs in results.items()
    }
    ratio = summary["turbo"]["images_per_s"] / summary["torch"]["images_per_s"]
    if args.json:
        print(json.dumps({**summary, "ratio": ratio, **vars(args)}))
        return
    print(
        f"{args.images} JPEGs ~500x375 -> {SIZE}x{SIZE}, batch {args.batch_size}, {args.nworkers} workers, "
        f"{args.rounds} interleaved rounds (medians)"
    )
    print(f"{'loader':<22}{'images/s':>12}{'first batch s':>16}")
    for name, label in (("turbo", "TurboDataLoader"), ("torch", "torch DataLoader")):
        print(f"{label:<22}{summary[name]['images_per_s']:>12.0f}{summary[name]['first_batch_s']:>16.3f}")
    print(f"{'ratio turbo/torch':<22}{ratio:>12.2f}")


if __name__ == "__main__":
    main()
