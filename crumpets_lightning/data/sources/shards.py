"""Many msgpack files (shards) as one random-access source, and the shard-aware epoch order.

``ShardedDataset(["train-000.msgpack", "train-001.msgpack"])`` has ``len() = sum of the shards' lengths``;
sample ``i`` is found by a binary search over the shards' first indices. Shuffled with the loader's own
global permutation, every sample may come from any shard at any time: right for local disks. For storage
where random access is slow (object stores, network file systems) :class:`WindowShuffledShards` defines
:meth:`~WindowShuffledShards.shuffled_order`: the shards in a random order, each read front to back, the
samples shuffled only within consecutive windows of ``shuffle_window`` samples. The loader plans each
epoch from that order (DDP sharding and mid-epoch resume work on top of it unchanged).

Example::

    source = ShardedDataset(sorted(glob.glob("shards/train-*.msgpack")))
    remote = WindowShuffledShards(["s3://bucket/train-000.msgpack", ...], shuffle_window=10_000)
"""

from __future__ import annotations

import bisect
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, overload

import numpy as np

from crumpets_lightning.data.sources.msgpack_file import MsgpackDataset
from crumpets_lightning.data.sources.remote import is_url

__all__ = ["ShardedDataset", "WindowShuffledShards", "window_shuffled_order"]

_WINDOW_STREAM = 0x5348_5244  # spawn key that keeps this order's generator apart from other streams


def window_shuffled_order(lengths: Sequence[int], window: int, seed: int, epoch: int) -> np.ndarray:
    """A permutation of ``range(sum(lengths))``: shards in random order, samples shuffled within windows.

    The shards (consecutive index ranges of the given ``lengths``) are put in a random order and
    concatenated; that sequence is cut into windows of ``window`` samples (the last one shorter) and each
    window is shuffled. A pure function of its arguments.

    Args:
        lengths: the number of samples of each shard.
        window: samples per shuffled window (>= 1).
        seed: the loader's seed (>= 0).
        epoch: the epoch (>= 0).

    Returns:
        The order, int64.
    """
    rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([seed, epoch], spawn_key=(_WINDOW_STREAM,))))
    starts = np.concatenate([[0], np.cumsum(lengths, dtype=np.int64)])
    order = np.concatenate(
        [np.arange(starts[s], starts[s + 1], dtype=np.int64) for s in rng.permutation(len(lengths))]
        or [np.zeros(0, dtype=np.int64)]
    )
    full = len(order) // window * window
    head = rng.permuted(order[:full].reshape(-1, window), axis=1).ravel()
    return np.concatenate([head, rng.permutation(order[full:])])


def _check_shard_paths(shards: object) -> list[str]:
    if isinstance(shards, (str, os.PathLike)) or not isinstance(shards, Sequence):
        raise TypeError(f"Expected `shards` to be a list of msgpack file paths or URLs but got {shards!r}")
    if not shards:
        raise ValueError("Expected `shards` to name at least one msgpack file but got an empty list")
    paths = []
    for i, shard in enumerate(shards):
        if not isinstance(shard, (str, os.PathLike)):
            raise TypeError(f"Expected shard {i} to be a path or URL string but got {type(shard).__name__}: {shard!r}")
        paths.append(os.fspath(shard))
    return paths


class ShardedDataset(Sequence[bytes]):
    """Several msgpack files as one source: ``dataset[i]`` is the packed bytes of the i-th sample overall.

    Each shard is a :class:`~crumpets_lightning.data.sources.msgpack_file.MsgpackDataset` (local or remote,
    opened from its index); remote shards are opened concurrently.

    Args:
        shards: the msgpack files, in order (local paths or fsspec URLs).
        storage_options: options for the fsspec filesystem of URLs.
        cache_dir: for URLs, a local folder that keeps fetched samples (see ``MsgpackDataset``).

    Raises:
        TypeError: ``shards`` is not a list of paths.
        ValueError: ``shards`` is empty, or a shard is corrupt.
        FileNotFoundError: a shard does not exist.
    """

    def __init__(
        self,
        shards: Sequence[str | os.PathLike[str]],
        *,
        storage_options: dict[str, Any] | None = None,
        cache_dir: str | os.PathLike[str] | None = None,
    ) -> None:
        paths = _check_shard_paths(shards)

        def open_shard(path: str) -> MsgpackDataset:
            return MsgpackDataset(path, storage_options=storage_options, cache_dir=cache_dir)

        if any(is_url(path) for path in paths) and len(paths) > 1:
            with ThreadPoolExecutor(max_workers=min(16, len(paths))) as pool:
                self.shards = list(pool.map(open_shard, paths))
        else:
            self.shards = [open_shard(path) for path in paths]
        lengths = [len(shard) for shard in self.shards]
        self.lengths = np.asarray(lengths, dtype=np.int64)
        self._starts = [0]
        for length in lengths:
            self._starts.append(self._starts[-1] + length)

    def __len__(self) -> int:
        return self._starts[-1]

    def locate(self, index: int) -> tuple[int, int]:
        """``(shard number, index within that shard)`` of sample ``index``.

        Raises:
            IndexError: ``index`` is out of range.
        """
        n = len(self)
        i = int(index)
        if i < 0:
            i += n
        if not 0 <= i < n:
            raise IndexError(f"{type(self).__name__} index {index} out of range for {n} samples")
        shard = bisect.bisect_right(self._starts, i) - 1
        return shard, i - self._starts[shard]

    @overload
    def __getitem__(self, index: int) -> bytes: ...

    @overload
    def __getitem__(self, index: slice) -> list[bytes]: ...

    def __getitem__(self, index: int | slice) -> bytes | list[bytes]:
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        shard, local = self.locate(index)
        return self.shards[shard][local]

    def read_many(self, indices: Sequence[int]) -> list[bytes]:
        """The packed bytes of several samples, each shard's share fetched with one ``read_many`` (see there).

        Raises:
            IndexError: an index is out of range.
        """
        by_shard: dict[int, list[tuple[int, int]]] = {}
        for k, index in enumerate(indices):
            shard, local = self.locate(index)
            by_shard.setdefault(shard, []).append((k, local))
        out: list[bytes] = [b""] * len(indices)
        for shard, wanted in by_shard.items():
            for (k, _), data in zip(wanted, self.shards[shard].read_many([local for _, local in wanted])):
                out[k] = data
        return out

    def sample_key(self, index: int) -> object:
        """The sample's key from its shard's ``.keys`` sidecar, else ``"<shard file>#<index in shard>"``."""
        shard, local = self.locate(index)
        key = self.shards[shard].sidecar_key(local)
        return f"{os.path.basename(str(self.shards[shard].path))}#{local}" if key is None else key

    def __repr__(self) -> str:
        return f"{type(self).__name__}(shards={len(self.shards)}, samples={len(self)})"


class WindowShuffledShards(ShardedDataset):
    """A :class:`ShardedDataset` whose shuffled epochs read shard by shard (for slow random access).

    Args:
        shards: the msgpack files, in order (local paths or fsspec URLs).
        shuffle_window: samples per shuffled window (>= 1): larger mixes better, smaller reads more
            sequentially.
        storage_options: options for the fsspec filesystem of URLs.
        cache_dir: for URLs, a local folder that keeps fetched samples (see ``MsgpackDataset``).

    Raises:
        ValueError: ``shuffle_window`` is not a positive int (and see :class:`ShardedDataset`).
    """

    def __init__(
        self,
        shards: Sequence[str | os.PathLike[str]],
        *,
        shuffle_window: int,
        storage_options: dict[str, Any] | None = None,
        cache_dir: str | os.PathLike[str] | None = None,
    ) -> None:
        if isinstance(shuffle_window, bool) or not isinstance(shuffle_window, int) or shuffle_window < 1:
            raise ValueError(f"Expected argument `shuffle_window` to be an int >= 1 but got {shuffle_window!r}")
        self.shuffle_window = shuffle_window
        super().__init__(shards, storage_options=storage_options, cache_dir=cache_dir)

    def shuffled_order(self, seed: int, epoch: int) -> np.ndarray:
        """The order of a shuffled epoch: shards in random order, samples shuffled within windows.

        A pure function of ``(seed, epoch)``: the same arguments give the same permutation of
        ``range(len(self))`` in every process.

        Raises:
            ValueError: ``seed`` or ``epoch`` is negative.
        """
        if seed < 0 or epoch < 0:
            raise ValueError(f"Expected `seed` and `epoch` to be ints >= 0 but got seed={seed}, epoch={epoch}")
        return window_shuffled_order(self.lengths.tolist(), self.shuffle_window, int(seed), int(epoch))

    def __repr__(self) -> str:
        return f"WindowShuffledShards(shards={len(self.shards)}, samples={len(self)}, window={self.shuffle_window})"
