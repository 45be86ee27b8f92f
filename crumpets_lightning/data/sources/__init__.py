"""Where samples come from: random-access readers of msgpack files, image folders and sequences."""

from crumpets_lightning.data.sources.datasets import ImageFolderDataset, MsgpackDataset, open_source, write_msgpack

__all__ = ["ImageFolderDataset", "MsgpackDataset", "open_source", "write_msgpack"]
