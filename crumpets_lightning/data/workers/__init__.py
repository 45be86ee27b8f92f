"""Workers: turn one sample into rows of a batch (decode, augment, write into shared memory)."""

from crumpets_lightning.data.workers.base import BufferWorker, Worker, make_buffer_spec, make_fill_value
from crumpets_lightning.data.workers.image import (
    ClassificationWorker,
    FCNWorker,
    ImageWorker,
    SaliencyWorker,
    SegmentationWorker,
)

__all__ = [
    "BufferWorker",
    "ClassificationWorker",
    "FCNWorker",
    "ImageWorker",
    "SaliencyWorker",
    "SegmentationWorker",
    "Worker",
    "make_buffer_spec",
    "make_fill_value",
]
