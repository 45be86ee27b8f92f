"""The worker contract helpers and the augmentation record that every other part builds on."""

from __future__ import annotations

import numpy as np
import pytest

from crumpets_lightning.data.augment.record import (
    AUGMENTATION_FIELDS,
    NEUTRAL_AUGMENTATION,
    augmentation_from_records,
    augmentation_to_records,
)
from crumpets_lightning.data.errors import SampleError, WorkerError
from crumpets_lightning.data.workers.base import BufferWorker, make_buffer_spec, make_fill_value


def test_scalar_fill_colours_every_channel():
    fill = make_fill_value((3, 4, 5), np.uint8, 128)
    buffer = np.zeros((2, 3, 4, 5), np.uint8)
    buffer[:] = fill
    assert (buffer == 128).all()


def test_per_channel_fill_broadcasts_over_channels():
    fill = make_fill_value((3, 4, 4), np.uint8, (1, 2, 3))
    assert fill.shape == (1, 3, 1, 1)
    buffer = np.zeros((2, 3, 4, 4), np.uint8)
    buffer[:] = fill
    assert [int(buffer[1, c].min()) for c in range(3)] == [1, 2, 3]


def test_fill_with_wrong_channel_count_names_the_value():
    with pytest.raises(ValueError, match=r"\(1, 2\)"):
        make_fill_value((3, 4, 4), np.uint8, (1, 2))


@pytest.mark.parametrize("spec", [((0, 3), np.uint8), ((3,), object), "image", ((3,), "not-a-dtype")])
def test_bad_buffer_specs_are_rejected(spec):
    with pytest.raises(ValueError):
        make_buffer_spec(spec)


def test_buffer_worker_registers_buffers_and_params():
    class Tiny(BufferWorker):
        def prepare(self, sample, batch, buffers):
            buffers["x"][0] = sample["x"]

    worker = Tiny(x=((1,), np.int64, 7))
    worker.add_params("image", None, {"scale_mode": "shortest"})
    shape, dtype, fill = worker.buffer_specs["x"]
    assert shape == (1,) and dtype == np.int64 and int(fill.ravel()[0]) == 7
    assert worker.params["image"] == {"scale_mode": "shortest"}
    copied = worker.copy()
    assert copied is not worker and copied.buffer_specs.keys() == worker.buffer_specs.keys()


def test_augmentation_records_round_trip():
    records = [
        {
            "color": True,
            "gamma_gray": 1.2,
            "gamma_color": (0.9, 1.0, 1.1),
            "contrast": -0.3,
            "noise": 0.05,
            "blur": 0.002,
        },
        {},
    ]
    rows = augmentation_from_records(records)
    assert rows.shape == (2, len(AUGMENTATION_FIELDS))
    np.testing.assert_array_equal(rows[1], NEUTRAL_AUGMENTATION)
    back = augmentation_to_records(rows)
    assert back[0]["color"] is True
    assert back[0]["gamma_color"] == pytest.approx((0.9, 1.0, 1.1))
    assert back[0]["blur"] == pytest.approx(0.002)


def test_errors_keep_key_and_traceback_through_pickle():
    import pickle

    error = WorkerError("ZeroDivisionError: division by zero", key="img_7", worker_traceback="Traceback: line 3")
    again = pickle.loads(pickle.dumps(error))
    assert again.key == "img_7" and "line 3" in str(again) and "img_7" in str(again)
    assert "sample 'a'" in str(pickle.loads(pickle.dumps(SampleError("corrupt JPEG", key="a"))))
