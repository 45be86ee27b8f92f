"""Where samples come from: msgpack files (local or remote, opened from an index), shards, image folders.

- :mod:`.msgpack_file`: :class:`MsgpackDataset` (one msgpack file, local path or fsspec URL) and
  :func:`write_msgpack` (writes a file and its datadings-compatible index);
- :mod:`.index`: finding sample offsets without reading the file (sidecars, cached index, one scan);
- :mod:`.shards`: :class:`ShardedDataset` and :class:`WindowShuffledShards` (many files as one source);
- :mod:`.remote`: fsspec URLs read in byte ranges, with an optional local sample cache;
- :mod:`.image_folder`: :class:`ImageFolderDataset` (``root/<class>/<image>``);
- :mod:`.open`: :func:`check_source` and :func:`open_source` (what a user passes, recognised by content).
"""

from crumpets_lightning.data.sources.image_folder import ImageFolderDataset
from crumpets_lightning.data.sources.msgpack_file import MsgpackDataset, write_msgpack
from crumpets_lightning.data.sources.open import check_source, open_source
from crumpets_lightning.data.sources.shards import ShardedDataset, WindowShuffledShards

__all__ = [
    "ImageFolderDataset",
    "MsgpackDataset",
    "ShardedDataset",
    "WindowShuffledShards",
    "check_source",
    "open_source",
    "write_msgpack",
]
