"""Bad input fuzzing (issue 7): random bytes, malformed msgpack, hostile msgpack-numpy payloads, unknown
extension types, truncated JPEGs and mistyped fields must each give a clear ``SampleError`` (never a crash,
a hang or an unpickled object).

The decoder (:func:`~crumpets_lightning.data.transport.codec.unpack_sample`) is fuzzed directly with many examples; the
full loader with a few (each example starts worker processes). ``pickle.loads`` is patched to fail the test
if anything tries to unpickle, and a payload whose ``__reduce__`` would create a marker file proves it
independently.
"""

from __future__ import annotations

import contextlib
import math
import pickle
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from unittest import mock

import msgpack
import numpy as np
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from crumpets_lightning.data.errors import SampleError
from crumpets_lightning.data.loader.loader import TurboDataLoader
from crumpets_lightning.data.transport.codec import pack_sample, unpack_sample
from crumpets_lightning.data.workers.image import ClassificationWorker
from tests.data._helpers import photo_crops

MARKER = Path(__file__).resolve().parent / "_fuzz_marker_must_never_exist"


class _Bomb:
    """Unpickling this creates :data:`MARKER`."""

    def __reduce__(self) -> tuple[Any, tuple[str, str]]:
        return (open, (str(MARKER), "w"))


BOMB = pickle.dumps(_Bomb())


@contextlib.contextmanager
def _no_unpickling() -> Iterator[None]:
    """Fail if anything calls pickle while decoding samples in this process, or if the bomb went off."""

    def refuse(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("something tried to unpickle sample data")

    with mock.patch("pickle.loads", refuse), mock.patch("pickle.load", refuse):
        yield
    assert not MARKER.exists(), "a pickled payload was executed"


@contextlib.contextmanager
def _bomb_never_explodes() -> Iterator[None]:
    """For loader runs (which pickle their own messages between processes): only the marker file counts."""
    yield
    assert not MARKER.exists(), "a pickled payload was executed in a worker"


def _decode(data: bytes) -> dict[str, Any] | SampleError:
    """unpack_sample's result, or the SampleError it raised (any other exception fails the test)."""
    with _no_unpickling():
        try:
            result = unpack_sample(data, key="fuzzed")
        except SampleError as error:
            assert error.key == "fuzzed" and "fuzzed" in str(error)
            return error
    assert isinstance(result, dict)
    _assert_no_objects(result)
    return result


def _assert_no_objects(value: Any) -> None:
    """Decoded samples hold only plain values and numeric numpy arrays/scalars."""
    if isinstance(value, dict):
        for key, item in value.items():
            assert isinstance(key, (str, bytes, int, float, bool, type(None)))
            _assert_no_objects(item)
    elif isinstance(value, list):
        for item in value:
            _assert_no_objects(item)
    elif isinstance(value, (np.ndarray, np.generic)):
        assert not value.dtype.hasobject
    else:
        assert isinstance(value, (str, bytes, int, float, bool, complex, type(None))), type(value)


# -- strategies ------------------------------------------------------------------------------------------------

_ints = st.integers(min_value=-(2**63), max_value=2**64 - 1)  # what msgpack can store
_scalars = (
    st.none() | st.booleans() | _ints | st.floats(allow_nan=False) | st.text(max_size=20) | st.binary(max_size=40)
)
_plain = st.recursive(
    _scalars,
    lambda children: st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=8), children, max_size=5),
    max_leaves=20,
)
_dtype_texts = st.sampled_from(
    ["|O", "O", "object", "<i8", "|u1", "<f4", ">f8", "|b1", "<U4", "|S3", "V8", "<M8[s]", "(1000000000000,)i8",
     "(2,3)<f4", "i8,O", "", "not a dtype", "<c16", "|V0"]
) | st.text(max_size=12)  # fmt: skip
_array_maps = st.fixed_dictionaries(
    {
        b"nd": st.sampled_from([True, False, 1, None, "yes"]),
        b"type": _dtype_texts | st.lists(st.lists(st.text(max_size=4) | _dtype_texts, max_size=3), max_size=3),
        b"kind": st.sampled_from([b"", b"O", b"V", "", "O", "V", None, 7]),
        b"shape": st.lists(st.integers(min_value=-3, max_value=2**40), max_size=4) | _ints | st.text(max_size=3),
        b"data": st.binary(max_size=64) | st.just(BOMB) | st.text(max_size=8) | _ints,
    }
)
_ext_types = st.builds(msgpack.ExtType, st.integers(min_value=0, max_value=127), st.binary(max_size=16) | st.just(BOMB))


def _hostile_sample(draw: Any) -> dict[str, Any]:
    sample = draw(st.dictionaries(st.text(max_size=6), _plain, max_size=3))
    sample[draw(st.text(max_size=6))] = draw(
        _array_maps | _ext_types | st.lists(_array_maps | _ext_types, min_size=1, max_size=3)
    )
    return sample


_hostile = st.composite(_hostile_sample)()

# -- the decoder, directly -------------------------------------------------------------------------------------


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=300))
def test_random_bytes_decode_to_a_dict_or_raise_sample_error(data: bytes) -> None:
    _decode(data)


@settings(max_examples=150)
@given(st.dictionaries(st.text(max_size=8), _plain, max_size=6))
def test_plain_samples_round_trip_and_every_truncation_is_a_sample_error(sample: dict[str, Any]) -> None:
    packed = pack_sample(sample)
    assert _decode(packed) == sample
    # msgpack is prefix-free: no strict prefix of one packed map is a complete sample
    for cut in sorted({0, 1, len(packed) // 2, len(packed) - 1} - {len(packed)}):
        assert isinstance(_decode(packed[:cut]), SampleError)
    # trailing garbage after a complete map is not silently ignored either
    assert isinstance(_decode(packed + b"\x01"), SampleError)


@settings(max_examples=200)
@given(_plain.filter(lambda value: not isinstance(value, dict)))
def test_packed_values_that_are_not_maps_are_sample_errors(value: Any) -> None:
    error = _decode(msgpack.packb(value, use_bin_type=True))
    assert isinstance(error, SampleError) and "map" in str(error)


@settings(max_examples=250, suppress_health_check=[HealthCheck.too_slow])
@given(_hostile)
def test_hostile_msgpack_numpy_payloads_never_unpickle(sample: dict[str, Any]) -> None:
    data = msgpack.packb(sample, use_bin_type=True)
    result = _decode(data)
    if isinstance(result, SampleError):
        return
    # accepted: only well-formed numeric arrays, with exactly the bytes they claim
    for key, value in sample.items():
        if isinstance(value, dict) and isinstance(result[key], np.ndarray):
            declared = value[b"shape"]
            assert list(result[key].shape) == list(declared)
            assert result[key].nbytes == len(value[b"data"])


@settings(max_examples=200)
@given(st.integers(min_value=0, max_value=127), st.binary(max_size=32) | st.just(BOMB), st.booleans())
def test_unknown_extension_types_are_refused_naming_the_type(code: int, payload: bytes, nested: bool) -> None:
    ext = msgpack.ExtType(code, payload)
    data = msgpack.packb({"image": b"x", "extra": [1, {"deep": ext}] if nested else ext}, use_bin_type=True)
    error = _decode(data)
    assert isinstance(error, SampleError) and f"extension type {code}" in str(error)


@pytest.mark.parametrize("dtype", ["|O", "O", "object", [["a", "|O"]], [["a", "<i4"], ["b", "|O"]]])
def test_object_dtype_arrays_are_refused_even_with_a_valid_pickle(dtype: Any) -> None:
    payload = {b"nd": True, b"type": dtype, b"kind": b"V" if isinstance(dtype, list) else b"O", b"shape": [1],
               b"data": BOMB}  # fmt: skip
    error = _decode(msgpack.packb({"image": b"x", "array": payload}, use_bin_type=True))
    assert isinstance(error, SampleError) and "object" in str(error)


def test_numeric_arrays_written_by_msgpack_numpy_still_decode() -> None:
    import msgpack_numpy

    array = np.arange(12, dtype="<i4").reshape(3, 4)
    data = msgpack.packb({"label": array, "score": np.float32(0.5)}, use_bin_type=True, default=msgpack_numpy.encode)
    result = _decode(data)
    assert isinstance(result, dict)
    np.testing.assert_array_equal(result["label"], array)
    assert result["score"] == np.float32(0.5) and result["score"].dtype == np.float32


# -- the full loader, a few examples ---------------------------------------------------------------------------

SIZE = 16
_PHOTOS = photo_crops(4, size=(24, 32))


def _bad_samples() -> st.SearchStrategy[tuple[str, Any]]:
    """(category, sample): 'bad' must be skipped, 'maybe' may decode (a truncated JPEG can partly decode)."""
    photo = st.sampled_from(_PHOTOS)

    def packed(sample: dict[str, Any]) -> bytes:
        return msgpack.packb(sample, use_bin_type=True)

    bad = st.one_of(
        st.binary(max_size=64).map(lambda b: ("bad", b"\xc1" + b)),  # 0xc1 is never valid msgpack
        _plain.filter(lambda v: not isinstance(v, dict)).map(lambda v: ("bad", packed(v))),  # type: ignore[arg-type]
        _hostile.filter(lambda s: "image" not in s).map(lambda s: ("bad", packed(s))),
        st.just(("bad", {"label": 1})),  # no image
        st.sampled_from([3, "a string", [1, 2], None, b""]).map(lambda i: ("bad", {"image": i, "label": 1})),
        photo.map(lambda p: ("bad", {"image": p})),  # no label
        st.tuples(photo, st.sampled_from(["cat", None, 2.5, [1, 2, 3], 2**64 - 1, {"a": 1}])).map(
            lambda pl: ("bad", {"image": pl[0], "label": pl[1]})
        ),
        photo.map(lambda p: ("bad", {"image": p[:12], "label": 1})),  # truncated inside the header
    )
    maybe = st.tuples(photo, st.floats(0.3, 0.95)).map(
        lambda pc: ("maybe", {"image": pc[0][: int(len(pc[0]) * pc[1])], "label": 1})
    )
    return st.one_of(bad, maybe)


def _classification_worker() -> ClassificationWorker:
    return ClassificationWorker(((3, SIZE, SIZE), np.uint8), ((1,), np.int64))


# few examples and no shrinking: every example starts worker processes
@settings(
    max_examples=6,
    deadline=None,
    phases=[Phase.explicit, Phase.generate],
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(st.lists(_bad_samples(), min_size=1, max_size=12), st.randoms(use_true_random=False))
def test_loader_skips_every_bad_sample_and_keeps_the_good_ones(bad: list[tuple[str, Any]], random: Any) -> None:
    good = [("good", {"image": data, "label": 100 + i}) for i, data in enumerate(_PHOTOS)]
    items = good + bad
    random.shuffle(items)
    samples = [sample for _, sample in items]
    loader = TurboDataLoader(samples, 4, _classification_worker(), nworkers=2, seed=0, skip_bad_samples=True)
    start = time.monotonic()
    labels = []
    with _bomb_never_explodes(), pytest.warns(RuntimeWarning, match="skipped"), loader:
        for _, mini_batches in loader:
            labels.extend(mini_batches[0]["label"].ravel().tolist())
            assert mini_batches[0]["image"].shape[1:] == (3, SIZE, SIZE)
    assert time.monotonic() - start < 20
    skipped = set(loader.skipped_samples)
    categories = [category for category, _ in items]
    assert {i for i, c in enumerate(categories) if c == "bad"} <= skipped
    assert skipped <= {i for i, c in enumerate(categories) if c != "good"}
    expected = [s["label"] for i, (c, s) in enumerate(items) if i not in skipped]
    assert labels == expected
    assert sorted(label for label in labels if label >= 100) == [100, 101, 102, 103]


@settings(
    max_examples=4, deadline=None, phases=[Phase.explicit, Phase.generate], suppress_health_check=[HealthCheck.too_slow]
)
@given(st.integers(min_value=0, max_value=7), _hostile | st.binary(max_size=40).map(lambda b: b"\xc1" + b))
def test_without_skipping_a_bad_sample_raises_sample_error_naming_it(position: int, bad: Any) -> None:
    samples: list[Any] = [{"image": _PHOTOS[i % 4], "label": i} for i in range(8)]
    samples[position] = bad if isinstance(bad, bytes) else msgpack.packb(bad, use_bin_type=True)
    if isinstance(bad, dict) and "image" in bad:
        bad.pop("image")
        samples[position] = msgpack.packb(bad, use_bin_type=True)
    loader = TurboDataLoader(samples, 4, _classification_worker(), nworkers=2, seed=0)
    start = time.monotonic()
    with _bomb_never_explodes(), pytest.raises(SampleError) as info:
        for _ in loader:
            pass
    assert time.monotonic() - start < 20
    assert info.value.key == position and repr(position) in str(info.value)
    assert not loader.running


def test_marker_path_is_outside_the_working_directory_and_absent() -> None:
    assert not MARKER.exists()
    assert math.isfinite(len(BOMB))
