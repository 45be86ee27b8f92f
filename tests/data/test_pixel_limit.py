"""The decoded-pixel limit: read from the header, a SampleError in milliseconds, no memory spike, skippable."""

from __future__ import annotations

import os
import struct
import subprocess
import sys
import textwrap
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest

from crumpets_lightning.data.augment.decode import DEFAULT_MAX_PIXELS, decode_image, image_size
from crumpets_lightning.data.errors import SampleError
from crumpets_lightning.data.loader.loader import TurboDataLoader
from crumpets_lightning.data.workers.image import ClassificationWorker

ROOT = Path(__file__).resolve().parents[2]


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def png_bomb(height: int, width: int) -> bytes:
    """A valid, all-black 1-bit gray PNG: tiny on disk, ``height * width`` bytes once decoded to uint8."""
    row = b"\x00" * (1 + (width + 7) // 8)  # filter byte + packed bits
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    data = zlib.compress(row * height, 9)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", data) + _chunk(b"IEND", b"")


def jpeg_with_size(height: int, width: int) -> bytes:
    """A small real JPEG whose start-of-frame claims ``height x width``."""
    data = bytearray(cv2.imencode(".jpg", np.full((16, 16, 3), 90, np.uint8))[1].tobytes())
    sof = data.index(b"\xff\xc0")
    data[sof + 5 : sof + 9] = struct.pack(">HH", height, width)
    return bytes(data)


def test_header_sizes_of_every_parsed_format() -> None:
    image = np.zeros((7, 11, 3), np.uint8)
    for ext in (".png", ".jpg", ".bmp", ".webp"):
        assert image_size(cv2.imencode(ext, image)[1]) == (7, 11), ext
    assert image_size(cv2.imencode(".webp", image, [cv2.IMWRITE_WEBP_QUALITY, 101])[1]) == (7, 11)  # lossless
    gif = b"GIF89a" + struct.pack("<HH", 11, 7) + b"\x00" * 8
    assert image_size(gif) == (7, 11)
    assert image_size(png_bomb(12000, 12000)) == (12000, 12000)
    assert image_size(jpeg_with_size(60000, 50000)) == (60000, 50000)
    assert image_size(b"\x00\x01\x02\x03 not an image") is None and image_size(b"") is None


def test_png_and_jpeg_bombs_raise_a_sample_error_naming_the_limit() -> None:
    with pytest.raises(SampleError, match=r"12000x12000 = 144\.0 megapixels.*max_pixels=100000000"):
        decode_image(png_bomb(12000, 12000))
    with pytest.raises(SampleError, match=r"50000x60000 = 3000\.0 megapixels.*max_pixels=100000000"):
        decode_image(jpeg_with_size(60000, 50000))
    small = cv2.imencode(".png", np.zeros((20, 30), np.uint8))[1]
    with pytest.raises(SampleError, match="max_pixels=500 "):
        decode_image(small, max_pixels=500)
    assert decode_image(small, max_pixels=600).shape == (20, 30, 3)
    assert DEFAULT_MAX_PIXELS == 100_000_000
    with pytest.raises(ValueError, match=r"max_pixels must be a positive int.*got -1"):
        decode_image(small, max_pixels=-1)


_MEASURE = textwrap.dedent(
    """
    import sys, time
    from crumpets_lightning.data.augment.decode import decode_image
    from crumpets_lightning.data.errors import SampleError

    def peak_kib():
        with open("/proc/self/status") as status:
            return next(int(line.split()[1]) for line in status if line.startswith("VmHWM:"))

    data = open(sys.argv[1], "rb").read()
    before = peak_kib()
    start = time.perf_counter()
    try:
        decode_image(data)
        raise SystemExit("no error")
    except SampleError:
        seconds = time.perf_counter() - start
    refused = peak_kib() - before
    decode_image(data, color=False, max_pixels=None)  # the same bytes really are a bomb: without the limit memory jumps
    print(seconds, refused, peak_kib() - before)
    """
)


@pytest.mark.parametrize("kind", ["png", "jpeg"])
def test_a_bomb_is_refused_in_milliseconds_without_a_memory_spike(kind: str, tmp_path: Path) -> None:
    path = tmp_path / f"bomb.{kind}"
    # the JPEG claims 12000 x 12000 but holds 16 x 16 pixels of data, so only its refusal is measured
    path.write_bytes(png_bomb(12000, 12000) if kind == "png" else jpeg_with_size(12000, 12000))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    script = _MEASURE if kind == "png" else _MEASURE.replace("decode_image(data, color=False, max_pixels=None)", "pass")
    done = subprocess.run(
        [sys.executable, "-c", script, str(path)], env=env, capture_output=True, text=True, timeout=100
    )
    assert done.returncode == 0, done.stderr[-2000:]
    seconds, refused_kib, unlimited_kib = (float(v) for v in done.stdout.split())
    assert seconds < 0.05, f"refusing took {seconds * 1000:.1f} ms"
    assert refused_kib < 8 * 1024, f"peak RSS grew by {refused_kib} kiB while refusing"
    if kind == "png":
        assert unlimited_kib > 100 * 1024  # decoding it for real needs 144 MB: the measurement can see a spike


def _photo(size: tuple[int, int] = (40, 50)) -> bytes:
    return cv2.imencode(".png", np.random.default_rng(0).integers(0, 256, (*size, 3), dtype=np.uint8))[1].tobytes()


def test_worker_names_the_sample_and_the_limit() -> None:
    worker = ClassificationWorker(((3, 16, 16), np.uint8), ((1,), np.int64), max_pixels=1000)
    buffers = {k: np.zeros(shape, dtype) for k, (shape, dtype, _) in worker.buffer_specs.items()}
    worker.sample_key = "holiday/big.png"
    with pytest.raises(SampleError, match=r"sample 'holiday/big.png': field 'image': image is 50x40 .*max_pixels=1000"):
        worker.prepare({"image": _photo(), "label": 1}, {}, buffers)
    with pytest.raises(ValueError, match=r"max_pixels must be a positive int.*got 'many'"):
        ClassificationWorker(((3, 16, 16), np.uint8), ((1,), np.int64), max_pixels="many")


def test_skip_bad_samples_skips_a_bomb_like_any_bad_sample() -> None:
    samples = [{"image": _photo(), "label": i, "key": f"ok{i}"} for i in range(5)]
    samples[2] = {"image": png_bomb(12000, 12000), "label": 2, "key": "bomb"}
    worker = ClassificationWorker(((3, 16, 16), np.uint8), ((1,), np.int64))
    loader = TurboDataLoader(samples, 5, worker, nworkers=1, seed=0, skip_bad_samples=True)
    try:
        with pytest.warns(RuntimeWarning, match="bomb"):
            batches = [mini[0] for _, mini in loader]
    finally:
        loader.stop()
    assert [b["key"] for b in batches] == [["ok0", "ok1", "ok3", "ok4"]]
    assert loader.skipped_samples == ["bomb"]
