"""Small workers and sample builders for loader tests (other test files may reuse them)."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import sklearn.datasets

from crumpets_lightning.data.errors import SampleError
from crumpets_lightning.data.workers.base import BufferWorker

SKLEARN_IMAGES = Path(sklearn.datasets.__file__).parent / "images"


class EchoWorker(BufferWorker):
    """Writes the sample's ``value`` and one draw from ``self.rng``; appends the sample key to ``batch``.

    ``value`` is what the sample says (so tests can check which samples a batch holds); ``draw`` is
    ``rng.random()`` (so tests can check per-sample generators); ``block`` is a small array of rng integers
    filling a multi-element buffer.
    """

    def __init__(self, fill: int = -1) -> None:
        super().__init__()
        self.add_buffer("value", ((1,), np.int64, fill))
        self.add_buffer("draw", ((1,), np.float64))
        self.add_buffer("block", ((2, 3), np.uint8))

    def prepare(self, sample: dict[str, Any], batch: dict[str, list], buffers: dict[str, np.ndarray]) -> None:
        if "value" not in sample:
            raise SampleError("has no 'value' field", self.sample_key)
        buffers["value"][0] = sample["value"]
        buffers["draw"][0] = self.rng.random()
        buffers["block"][...] = self.rng.integers(0, 256, size=(2, 3), dtype=np.uint8)
        batch.setdefault("key", []).append(self.sample_key)


class PartialWorker(EchoWorker):
    """Writes only ``value``: other buffers must show their fill value."""

    def prepare(self, sample: dict[str, Any], batch: dict[str, list], buffers: dict[str, np.ndarray]) -> None:
        buffers["value"][0] = sample["value"]


class CustomWorkerProblem(Exception):
    """A user-defined exception type (not picklable by default because of the extra argument)."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


class FailingWorker(EchoWorker):
    """Raises ``error`` for the sample whose value equals ``bad_value``."""

    def __init__(self, bad_value: int, error: str) -> None:
        super().__init__()
        self.bad_value = bad_value
        self.error = error

    def prepare(self, sample: dict[str, Any], batch: dict[str, list], buffers: dict[str, np.ndarray]) -> None:
        if sample["value"] == self.bad_value:
            if self.error == "value":
                raise ValueError(f"cannot handle value {self.bad_value}")
            if self.error == "custom":
                raise CustomWorkerProblem("custom failure", 42)
            if self.error == "key":
                raise KeyError("missing_field")
            if self.error == "sample":
                raise SampleError("deliberately bad", self.sample_key)
            if self.error == "exit":
                os._exit(3)
            if self.error == "hang":
                time.sleep(60)
        super().prepare(sample, batch, buffers)


class SetupFailingWorker(EchoWorker):
    def setup(self) -> None:
        raise RuntimeError("setup broke")


class SelfKillWorker(EchoWorker):
    """SIGKILLs itself on ``bad_value`` (like the OOM killer would), after ``settle_s`` seconds.

    ZeroMQ sends from an I/O thread: a reply sent just before the kill may die with the process. A test that
    needs the earlier replies delivered lets them settle first.
    """

    def __init__(self, bad_value: int, settle_s: float = 0.0) -> None:
        super().__init__()
        self.bad_value = bad_value
        self.settle_s = settle_s

    def prepare(self, sample: dict[str, Any], batch: dict[str, list], buffers: dict[str, np.ndarray]) -> None:
        if sample["value"] == self.bad_value:
            time.sleep(self.settle_s)
            os.kill(os.getpid(), signal.SIGKILL)
        super().prepare(sample, batch, buffers)


class DecodeWorker(BufferWorker):
    """Decodes ``image`` bytes with OpenCV, resizes to ``size``, writes CHW RGB and the label.

    Raises ``SampleError`` (naming the sample) for undecodable bytes, a missing image and a non-int label.
    """

    def __init__(self, size: tuple[int, int] = (16, 16), jitter: bool = True) -> None:
        super().__init__()
        self.size = size
        self.jitter = jitter
        self.add_buffer("image", ((3, size[0], size[1]), np.uint8))
        self.add_buffer("label", ((1,), np.int64))

    def prepare(self, sample: dict[str, Any], batch: dict[str, list], buffers: dict[str, np.ndarray]) -> None:
        if "image" not in sample:
            raise SampleError("has no 'image' field", self.sample_key)
        label = sample.get("label")
        if isinstance(label, bool) or not isinstance(label, (int, np.integer)):
            raise SampleError(f"label must be an int, got {type(label).__name__}", self.sample_key)
        data = np.frombuffer(sample["image"], np.uint8)
        image = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
        if image is None:
            raise SampleError("image bytes cannot be decoded", self.sample_key)
        if self.jitter:
            # a random crop so results depend on the per-sample generator
            h, w = image.shape[:2]
            y = int(self.rng.integers(0, max(1, h // 4)))
            x = int(self.rng.integers(0, max(1, w // 4)))
            image = image[y:, x:]
        image = cv2.resize(image, (self.size[1], self.size[0]), interpolation=cv2.INTER_AREA)
        buffers["image"][...] = image[:, :, ::-1].transpose(2, 0, 1)
        buffers["label"][0] = int(label)


def value_samples(n: int, start: int = 0) -> list[dict[str, Any]]:
    """``n`` dict samples ``{"value": i, "key": f"s{i}"}``."""
    return [{"value": i, "key": f"s{i}"} for i in range(start, start + n)]


def synthetic_images(n: int, size: tuple[int, int] = (24, 32), seed: int = 0, ext: str = ".png") -> list[bytes]:
    """``n`` small encoded images with random content (PNG is lossless, so decoding is exact)."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        image = rng.integers(0, 256, size=(*size, 3), dtype=np.uint8)
        ok, data = cv2.imencode(ext, image)
        assert ok
        out.append(data.tobytes())
    return out


def photo_crops(n: int, size: tuple[int, int] = (60, 80), seed: int = 0) -> list[bytes]:
    """``n`` JPEGs cut from the sklearn sample photos (random crops and flips), resized to ``size``."""
    photos = [cv2.imread(str(SKLEARN_IMAGES / name)) for name in ("china.jpg", "flower.jpg")]
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        photo = photos[i % 2]
        h, w = photo.shape[:2]
        ch, cw = int(rng.integers(h // 3, h)), int(rng.integers(w // 3, w))
        y, x = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
        crop = photo[y : y + ch, x : x + cw]
        if rng.random() < 0.5:
            crop = crop[:, ::-1]
        crop = cv2.resize(crop, (size[1], size[0]), interpolation=cv2.INTER_AREA)
        ok, data = cv2.imencode(".jpg", crop, [cv2.IMWRITE_JPEG_QUALITY, 90])
        assert ok
        out.append(data.tobytes())
    return out


def collect(loader: Any, epochs: int = 1) -> list[list[dict[str, Any]]]:
    """All mini-batch lists of ``epochs`` epochs, arrays copied (so slots can be reused)."""
    out = []
    for _ in range(epochs):
        for _, mini_batches in loader:
            out.append(
                [{k: (v.copy() if isinstance(v, np.ndarray) else list(v)) for k, v in m.items()} for m in mini_batches]
            )
    return out


def concat(batches: list[list[dict[str, Any]]], key: str) -> np.ndarray:
    """One array of ``key`` over every mini-batch of every batch."""
    return np.concatenate([m[key] for mini_batches in batches for m in mini_batches])
