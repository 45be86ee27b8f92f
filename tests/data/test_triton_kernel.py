"""The fused Triton kernel against the torch path: interpreted on the CPU (TRITON_INTERPRET=1), and on CUDA.

Triton reads ``TRITON_INTERPRET`` when a kernel module is imported, so the interpreted run happens in a
subprocess that sets it first (this test process may already hold a compiled-mode import). Both runs
share one script, :mod:`tests.data._triton_cases`.
"""

from __future__ import annotations

import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("triton", reason="triton is a dev dependency on x86-64 Linux (pip install triton)")

ROOT = Path(__file__).resolve().parents[2]


def _diff(a: np.ndarray, b: np.ndarray) -> int:
    return int(np.abs(a.astype(np.int32) - b.astype(np.int32)).max())


def _check(results: dict[str, np.ndarray], noise_atol: float) -> None:
    from tests.data._triton_cases import CASES

    for name in CASES:
        image, reference, fused = results[f"{name}_image"], results[f"{name}_torch"], results[f"{name}_triton"]
        assert fused.dtype == np.uint8 and fused.shape == image.shape
        assert _diff(fused, reference) <= 1, name  # the same math, float rounding apart
        assert float(np.mean(fused == reference)) > 0.98, name
        assert _diff(fused, image) > 20, name  # the ops really ran
        assert np.array_equal(results[f"{name}_triton_alone"], fused[1:]), name  # independent of the batch
    np.testing.assert_allclose(results["noise_triton"], results["noise_torch"], rtol=0, atol=noise_atol)
    assert float(np.std(results["noise_triton"])) == pytest.approx(1.0, abs=0.15)


@pytest.fixture(scope="module")
def interpreted(tmp_path_factory: pytest.TempPathFactory) -> dict[str, np.ndarray]:
    path = tmp_path_factory.mktemp("triton") / "cases.npz"
    env = {
        **os.environ,
        "TRITON_INTERPRET": "1",
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    done = subprocess.run(
        [sys.executable, "-m", "tests.data._triton_cases", str(path), "cpu"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=110,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    with np.load(path) as data:
        return dict(data)


def test_interpreted_kernel_matches_the_torch_path(interpreted: dict[str, np.ndarray]) -> None:
    # the interpreter computes in numpy float32 like torch on the CPU: the noise agrees to float rounding
    _check(interpreted, noise_atol=1e-5)


def test_auto_backend_on_cpu_tensors_never_imports_triton() -> None:
    code = (
        "import sys, torch\n"
        "from crumpets_lightning.data.augment.batched import randomize_batch\n"
        "from crumpets_lightning.data.augment.record import NEUTRAL_AUGMENTATION\n"
        "randomize_batch(torch.zeros(1, 3, 4, 4, dtype=torch.uint8), torch.tensor(NEUTRAL_AUGMENTATION)[None])\n"
        "assert 'triton' not in sys.modules, 'triton imported'\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr[-2000:]


@pytest.mark.gpu
def test_cuda_kernel_matches_the_torch_path() -> None:
    from tests.data._triton_cases import run

    # libdevice/approximate log, cos and fused multiply-adds on the GPU: the noise agrees to ~1e-5 of its std
    _check(run("cuda"), noise_atol=1e-4)


@pytest.mark.gpu
def test_cuda_auto_backend_is_the_kernel_and_agrees_with_cpu() -> None:
    from crumpets_lightning.data.augment.batched import randomize_batch
    from tests.data._triton_cases import images, records

    image = images((64, 3, 56, 64), seed=3)
    aug = records(64, [0.1 + 0.05 * i for i in range(64)], 64)
    cpu = randomize_batch(image, aug).numpy()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a kernel failure would warn and fall back to torch
        cuda = randomize_batch(image.cuda(), aug.cuda())
    assert cuda.is_cuda and cuda.dtype == torch.uint8
    assert _diff(cuda.cpu().numpy(), cpu) <= 1
    torch.manual_seed(1)  # torch's RNG plays no part
    again = randomize_batch(image.cuda()[10:20], aug.cuda()[10:20])
    assert torch.equal(again, cuda[10:20])


def test_images_beyond_the_grid_go_to_the_torch_path() -> None:
    from crumpets_lightning.data.augment import _triton_kernel

    assert _triton_kernel.fits(224, 224) and _triton_kernel.fits(4096, 8192)
    assert not _triton_kernel.fits(8192, 8192)  # 512 x 128 tiles: one more than CUDA's 65535


@pytest.mark.gpu
def test_cuda_kernel_path_never_waits_for_the_device() -> None:
    from crumpets_lightning.data.augment.batched import randomize_batch
    from tests.data._triton_cases import images, records

    image = images((32, 3, 64, 64), seed=4).cuda()
    aug = records(32, [0.05 * i for i in range(32)], 64).cuda()
    randomize_batch(image, aug)  # compile first
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")  # any host synchronisation inside raises
    try:
        out = randomize_batch(image, aug)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert out.shape == image.shape
