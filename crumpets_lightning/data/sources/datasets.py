"""The import path of the sources before they were split into one module per concept.

``crumpets_lightning.data`` (its lazy ``_NAMES`` map), the CLI, the demo and some tests import from here;
new code imports from :mod:`crumpets_lightning.data.sources`.
"""

from crumpets_lightning.data.sources.image_folder import IMAGE_EXTENSIONS, ImageFolderDataset
from crumpets_lightning.data.sources.msgpack_file import MsgpackDataset, write_msgpack
from crumpets_lightning.data.sources.open import check_source, open_source
from crumpets_lightning.data.sources.shards import ShardedDataset, WindowShuffledShards

__all__ = [
    "IMAGE_EXTENSIONS",
    "ImageFolderDataset",
    "MsgpackDataset",
    "ShardedDataset",
    "WindowShuffledShards",
    "check_source",
    "open_source",
    "write_msgpack",
]
