"""Safe msgpack encoding of samples, compatible with crumpets/datadings files.

Samples travel and are stored as msgpack maps (``use_bin_type=True``); numpy arrays and scalars are encoded
the way ``msgpack_numpy`` does it (a map with ``nd``, ``type``, ``kind``, ``shape`` and ``data``), so files
written by crumpets or datadings tools read back here and the other way round.

Decoding never unpickles anything: ``msgpack_numpy.decode`` calls ``pickle.loads`` for object arrays, which
runs arbitrary code from the file. :func:`unpack_sample` decodes array maps itself and rejects object dtypes
and msgpack extension types with a :class:`~crumpets_lightning.data.errors.SampleError`.

Example::

    >>> data = pack_sample({"image": b"...", "label": np.int64(3)})
    >>> unpack_sample(data)["label"]
    np.int64(3)
"""

from __future__ import annotations

import math
from typing import Any

import msgpack
import numpy as np

from crumpets_lightning.data.errors import SampleError

__all__ = ["pack_sample", "unpack_sample"]

_ARRAY_KEYS = frozenset({"nd", "type", "data"})


def _encode(obj: Any) -> Any:
    """msgpack ``default`` hook: numpy arrays / scalars and complex numbers in msgpack-numpy layout."""
    if isinstance(obj, np.ndarray):
        if obj.dtype.hasobject:
            raise TypeError(
                f"Cannot pack a numpy array of dtype {obj.dtype}: object arrays would need pickle; "
                "convert it to a numeric array or to lists"
            )
        if obj.dtype.kind == "V":
            return {
                b"nd": True,
                b"type": obj.dtype.descr,
                b"kind": b"V",
                b"shape": obj.shape,
                b"data": obj.tobytes(),
            }
        return {b"nd": True, b"type": obj.dtype.str, b"kind": b"", b"shape": obj.shape, b"data": obj.tobytes()}
    if isinstance(obj, (np.bool_, np.number)):
        return {b"nd": False, b"type": obj.dtype.str, b"data": obj.tobytes()}
    if isinstance(obj, complex):
        return {b"complex": True, b"data": repr(obj)}
    raise TypeError(
        f"Cannot pack a value of type {type(obj).__name__}: samples hold bytes, str, numbers, lists, dicts "
        "and numpy arrays"
    )


def pack_sample(sample: dict[str, Any]) -> bytes:
    """Pack a sample dict as msgpack bytes (``use_bin_type=True``, numpy arrays msgpack-numpy style).

    Args:
        sample: a dict such as ``{"image": jpeg_bytes, "label": 3, "key": "cat/1.jpg"}``.

    Returns:
        The packed bytes, readable by :func:`unpack_sample`, crumpets and datadings.

    Raises:
        TypeError: ``sample`` is not a dict or holds a value msgpack cannot store (e.g. an object array).
    """
    if not isinstance(sample, dict):
        raise TypeError(f"A sample must be a dict, got {type(sample).__name__}")
    return msgpack.packb(sample, use_bin_type=True, default=_encode)


def _text(value: Any) -> Any:
    return value.decode("utf-8", errors="replace") if isinstance(value, bytes) else value


def _decode_dtype(type_field: Any, kind: Any, key: object) -> np.dtype:
    try:
        if _text(kind) == "V":
            fields = [tuple(_text(part) for part in field) for field in type_field]
            dtype = np.dtype(fields)
        else:
            dtype = np.dtype(_text(type_field))
    except (TypeError, ValueError) as error:
        raise SampleError(f"array with an invalid dtype {type_field!r} ({error})", key) from None
    if dtype.hasobject or dtype.kind == "O":
        raise SampleError(
            f"array with object dtype {dtype} refused: decoding it would unpickle data from the file, "
            "which can run arbitrary code; store numeric arrays instead",
            key,
        )
    return dtype


def _decode_array(obj: dict[str, Any], key: object) -> Any:
    data = obj["data"]
    if obj["nd"] is True:
        dtype = _decode_dtype(obj["type"], obj.get("kind", ""), key)
        shape_field = obj.get("shape")
        if not isinstance(shape_field, (list, tuple)) or not all(isinstance(s, int) and s >= 0 for s in shape_field):
            raise SampleError(f"array with an invalid shape {shape_field!r}", key)
        if not isinstance(data, bytes):
            raise SampleError(f"array data must be bytes, got {type(data).__name__}", key)
        shape = tuple(shape_field)
        expected = math.prod(shape) * dtype.itemsize
        if len(data) != expected:
            raise SampleError(
                f"array of shape {shape} and dtype {dtype} needs {expected} bytes but has {len(data)}", key
            )
        return np.frombuffer(bytearray(data), dtype=dtype).reshape(shape)
    dtype = _decode_dtype(obj["type"], "", key)
    if not isinstance(data, bytes) or len(data) != dtype.itemsize:
        raise SampleError(f"numpy scalar of dtype {dtype} with invalid data {data!r}", key)
    return np.frombuffer(data, dtype=dtype)[0]


def _make_object_hook(key: object) -> Any:
    def object_hook(obj: dict[Any, Any]) -> Any:
        decoded = {_text(k): v for k, v in obj.items()}
        if "nd" in decoded and decoded.keys() >= _ARRAY_KEYS:
            return _decode_array(decoded, key)
        if decoded.get("complex") is True and isinstance(decoded.get("data"), (str, bytes)) and len(decoded) == 2:
            try:
                return complex(_text(decoded["data"]))
            except ValueError:
                raise SampleError(f"invalid complex number {decoded['data']!r}", key) from None
        return decoded

    return object_hook


def _make_ext_hook(key: object) -> Any:
    def ext_hook(code: int, data: bytes) -> Any:
        raise SampleError(
            f"msgpack extension type {code} refused ({len(data)} bytes): samples may hold only plain msgpack "
            "values and msgpack-numpy arrays",
            key,
        )

    return ext_hook


def unpack_sample(data: bytes | bytearray | memoryview, key: object = None) -> dict[str, Any]:
    """Decode msgpack bytes into a sample dict, safely (nothing is ever unpickled).

    Map keys are decoded as ``str``; msgpack-numpy arrays become (writable) numpy arrays and scalars.

    Args:
        data: the packed sample.
        key: how to name the sample in error messages (its index in the source, say).

    Returns:
        The sample dict.

    Raises:
        SampleError: the bytes are truncated or not msgpack, the top level is not a map, or the sample holds
            an object array or a msgpack extension type.
    """
    object_hook = _make_object_hook(key)
    ext_hook = _make_ext_hook(key)
    try:
        try:
            sample = msgpack.unpackb(data, raw=False, object_hook=object_hook, ext_hook=ext_hook, strict_map_key=False)
        except UnicodeDecodeError:
            # Files written without use_bin_type store bytes as raw strings: keep values as bytes.
            sample = msgpack.unpackb(data, raw=True, object_hook=object_hook, ext_hook=ext_hook, strict_map_key=False)
    except SampleError:
        raise
    except (ValueError, TypeError, msgpack.UnpackException) as error:
        raise SampleError(
            f"cannot decode msgpack sample ({type(error).__name__}: {error}); the data is truncated or not "
            "a msgpack map",
            key,
        ) from None
    if not isinstance(sample, dict):
        raise SampleError(
            f"a packed sample must be a msgpack map (dict), got {type(sample).__name__}; pack samples with "
            "pack_sample()",
            key,
        )
    return sample
