"""TorchTurboDataLoader: tensors that are zero-copy views of shared memory on the CPU; CUDA copies."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from crumpets_lightning.data.loader.loader import TurboDataLoader
from crumpets_lightning.data.loader.torch_loader import TorchTurboDataLoader
from tests.data._helpers import EchoWorker, collect, photo_crops, value_samples


def test_cpu_tensors_are_views_of_the_shared_memory_slot():
    loader = TorchTurboDataLoader(value_samples(8), 4, EchoWorker(), nworkers=2, seed=1)
    iteration, mini_batches = next(iter(loader))
    batch = mini_batches[0]
    assert iteration == 1
    assert isinstance(batch["value"], torch.Tensor) and batch["value"].dtype == torch.int64
    assert batch["value"].shape == (4, 1) and batch["block"].shape == (4, 2, 3)
    assert batch["key"] == ["s0", "s1", "s2", "s3"]
    # the tensor's memory lies inside the slot's mapping: writing through the ring's own view shows in it
    runtime = loader._holder.runtime
    slot_views = [runtime.ring.views(slot) for slot in list(runtime.ring._slots)]
    hits = [views for views in slot_views if views["value"][:4].ctypes.data == batch["value"].data_ptr()]
    assert len(hits) == 1
    hits[0]["value"][0, 0] = 12345
    assert int(batch["value"][0, 0]) == 12345
    del batch, mini_batches, hits, slot_views
    loader.stop()


def test_torch_loader_yields_the_same_data_as_the_numpy_loader():
    a = TorchTurboDataLoader(value_samples(10), 4, EchoWorker(), nworkers=2, seed=4, shuffle=True, num_mini_batches=2)
    b = TurboDataLoader(value_samples(10), 4, EchoWorker(), nworkers=1, seed=4, shuffle=True, num_mini_batches=2)
    got = [[{k: (v.clone() if isinstance(v, torch.Tensor) else v) for k, v in m.items()} for m in mb] for _, mb in a]
    want = collect(b)
    a.stop()
    b.stop()
    assert len(got) == len(want) == 3
    for mini_a, mini_b in zip(got, want):
        assert len(mini_a) == len(mini_b)
        for ma, mb in zip(mini_a, mini_b):
            for key in ("value", "draw", "block"):
                np.testing.assert_array_equal(ma[key].numpy(), mb[key])


def test_gpu_augmentation_flag_reaches_a_copy_of_the_worker_template_not_the_callers():
    worker = EchoWorker()
    loader = TorchTurboDataLoader(value_samples(4), 2, worker, nworkers=1, gpu_augmentation=True)
    assert loader.worker_template.gpu_augmentation is True
    assert loader.worker_template is not worker and worker.gpu_augmentation is False


def test_cuda_device_without_cuda_is_a_clear_error():
    if torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    with pytest.raises(ValueError, match="CUDA"):
        TorchTurboDataLoader(value_samples(4), 2, EchoWorker(), nworkers=1, device="cuda")


@pytest.mark.gpu
def test_cuda_batches_match_the_cpu_batches_and_resume_counts_delivered_batches():
    cuda = TorchTurboDataLoader(value_samples(20), 4, EchoWorker(), nworkers=2, seed=3, shuffle=True, device="cuda")
    cpu = TurboDataLoader(value_samples(20), 4, EchoWorker(), nworkers=2, seed=3, shuffle=True)
    want = collect(cpu)
    it = iter(cuda)
    got = []
    for _ in range(2):
        _, mini_batches = next(it)
        assert mini_batches[0]["value"].device.type == "cuda"
        got.append(mini_batches[0]["value"].cpu().numpy())
    state = cuda.state_dict()
    assert state["batches_done"] == 2
    resumed = TorchTurboDataLoader(value_samples(20), 4, EchoWorker(), nworkers=1, seed=3, shuffle=True, device="cuda")
    resumed.load_state_dict(state)
    got += [mb[0]["value"].cpu().numpy() for _, mb in resumed]
    for loader in (cuda, cpu, resumed):
        loader.stop()
    np.testing.assert_array_equal(np.concatenate(got), np.concatenate([mb[0]["value"] for mb in want]))


def test_gpu_augmentation_on_the_cpu_device_matches_the_workers_pixel_ops():
    """With gpu_augmentation the workers leave the pixels alone and the Randomizer applies the same ops."""
    from crumpets_lightning.data.augment.rng import MixtureRNG
    from crumpets_lightning.data.workers.image import ClassificationWorker

    samples = [{"image": data, "label": i} for i, data in enumerate(photo_crops(8, size=(48, 64)))]
    # every pixel op but noise (whose samples differ by design), always on
    rng = MixtureRNG(prob=1.0, brightness_range=(-0.5, 0.5), color_range=(-0.3, 0.3), contrast_range=(-0.6, 0.6),
                     blur_range=(0.01, 0.03), scale_range=(0.9, 1.1), rotation_sigma=5)  # fmt: skip

    def batches(gpu_augmentation: bool) -> list[dict[str, torch.Tensor]]:
        worker = ClassificationWorker(((3, 32, 32), np.uint8), ((1,), np.int64), image_rng=rng)
        loader = TorchTurboDataLoader(samples, 4, worker, nworkers=2, seed=3, gpu_augmentation=gpu_augmentation)
        try:
            return [{k: v.clone() for k, v in mb[0].items() if isinstance(v, torch.Tensor)} for _, mb in loader]
        finally:
            loader.stop()

    on_cpu, by_randomizer = batches(False), batches(True)
    assert len(on_cpu) == len(by_randomizer) == 2
    for cpu_batch, gpu_batch in zip(on_cpu, by_randomizer):
        torch.testing.assert_close(cpu_batch["augmentation"], gpu_batch["augmentation"])  # same draws
        assert not torch.equal(gpu_batch["augmentation"][:, 1], torch.ones(4))  # brightness was drawn
        difference = (cpu_batch["image"].int() - gpu_batch["image"].int()).abs()
        assert difference.max() <= 2, difference.max()
        assert difference.float().mean() < 0.5


def test_crumpets_positional_order_puts_device_eighth():
    if torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    with pytest.raises(ValueError, match="'cuda:0' asked for but CUDA is not available"):
        TorchTurboDataLoader(value_samples(4), 4, EchoWorker(), 2, None, 1, 0, "cuda:0")
    loader = TorchTurboDataLoader(value_samples(4), 4, EchoWorker(), 2, None, 1, 0, "cpu", False, 3)
    assert (loader.device, loader.gpu_augmentation, loader._nslots) == (torch.device("cpu"), False, 3)
    keywords = TorchTurboDataLoader(value_samples(4), 4, EchoWorker(), nworkers=2, shared_memory=3, device="cpu")
    assert keywords._nslots == 3


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"device": "gpu0"}, ValueError, r"`device` to be a torch device .* but got 'gpu0'"),
        ({"device": 3.5}, ValueError, "device"),
        ({"gpu_augmentation": "yes"}, TypeError, "gpu_augmentation"),
        ({"pin_memory": 1}, TypeError, "pin_memory"),
        ({"timeout": "x"}, TypeError, "timeout"),
    ],
)
def test_torch_loader_arguments_are_checked_naming_them(kwargs, error, match):
    with pytest.raises(error, match=match):
        TorchTurboDataLoader(value_samples(4), 2, EchoWorker(), nworkers=1, **kwargs)


def test_the_subclass_overrides_only_the_convert_hook():
    import inspect

    from crumpets_lightning.data.loader import torch_loader

    source = inspect.getsource(torch_loader)
    assert (
        "_EpochIterator" not in source and "batches_done" not in source and "crumpets_lightning.modules" not in source
    )
    overridden = {name for name in vars(TorchTurboDataLoader) if callable(vars(TorchTurboDataLoader)[name])}
    assert overridden - {"__init__", "__getstate__", "__setstate__"} == {"convert"}


@pytest.mark.gpu
def test_cuda_slots_are_page_locked_and_copied_straight_from_them():
    cuda = TorchTurboDataLoader(value_samples(20), 4, EchoWorker(), 2, device="cuda", seed=3, shared_memory=3)
    cpu = TorchTurboDataLoader(value_samples(20), 4, EchoWorker(), 2, device="cpu", seed=3)
    try:
        got = [mb[0]["value"].cpu().clone() for _, mb in cuda]
        assert cuda.transfer is not None and len(cuda.transfer.regions) == 3  # every slot registered
        want = [mb[0]["value"].clone() for _, mb in cpu]
        assert all(torch.equal(a, b) for a, b in zip(got, want)) and len(got) == 5
    finally:
        cuda.stop()
        cpu.stop()
    assert not cuda.transfer.regions  # unregistered before the slots were unmapped
