"""The crumpets documentation's examples (crumpets-docs.txt), and running them with only the imports changed.

Each example is kept as two strings: ``*_CRUMPETS_IMPORTS`` (the crumpets imports it needs) and ``*_BODY`` (the
code as printed in the docs, verbatim). :func:`port` swaps the crumpets imports for crumpets-lightning ones
line by line with :data:`IMPORT_MAP` (the README's table), asserts that nothing else changed, and the tests
run the result.

Two edits are not about crumpets and are applied everywhere, each named where it is used:

- ``np.int`` -> ``np.int64``: numpy removed the ``np.int`` alias in 1.24 (the docs predate that);
- the docs leave a few things to the reader (``foo``, the network's body; ``make_loader``, "implementation can be
  found in previous section"; ``devices``, ``lr`` ...): the tests define them before running the code.
"""

from __future__ import annotations

import re
from typing import Any

#: crumpets import line -> crumpets-lightning import line (the README's "Porting crumpets code" table).
IMPORT_MAP = {
    "from crumpets.dataloader import TurboDataLoader": "from crumpets_lightning.data import TurboDataLoader",
    "from crumpets.torch.dataloader import TorchTurboDataLoader": (
        "from crumpets_lightning.data import TorchTurboDataLoader"
    ),
    "from crumpets.workers import ClassificationWorker": "from crumpets_lightning.data import ClassificationWorker",
    "from crumpets.presets import AUGMENTATION_TRAIN": "from crumpets_lightning.data import AUGMENTATION_TRAIN",
    "from crumpets.presets import MixtureRNG": "from crumpets_lightning.data import MixtureRNG",
    "from crumpets.presets import no_augmentation": "from crumpets_lightning.data import no_augmentation",
    "from crumpets.torch.utils import Unpacker": "from crumpets_lightning.modules import Unpacker",
    "from crumpets.torch.policy import PolyPolicy": "from crumpets_lightning.modules import PolyPolicy",
    "from crumpets.torch.loss import CrossEntropyLoss": "from crumpets_lightning.modules import CrossEntropyLoss",
    "from crumpets.torch.metrics import AccuracyMetric": "from crumpets_lightning.modules import AccuracyMetric",
}

NUMPY_INT = ("np.int)", "np.int64)")  # numpy >= 1.24 has no np.int


def port(*parts: str) -> str:
    """The example (``parts`` joined) with its crumpets import lines replaced, every other line unchanged.

    ``np.int`` becomes ``np.int64`` (see the module docstring).
    """
    lines = []
    for line in "\n".join(parts).replace(*NUMPY_INT).splitlines():
        if line.strip().startswith(("from crumpets.", "import crumpets")):
            assert line.strip() in IMPORT_MAP, f"no port known for {line!r}"
            lines.append(line.replace(line.strip(), IMPORT_MAP[line.strip()]))
        else:
            lines.append(line)
    ported = "\n".join(lines) + "\n"
    code = "\n".join(line.split("#")[0] for line in lines)  # comments may still mention crumpets
    assert not re.search(r"\bcrumpets\.", code), ported
    return ported


def run(code: str, namespace: dict[str, Any] | None = None) -> dict[str, Any]:
    """Execute ``code`` in a fresh namespace (plus ``namespace``) and return it."""
    scope: dict[str, Any] = {"__name__": "crumpets_docs_example", **(namespace or {})}
    exec(compile(code, "<crumpets docs example>", "exec"), scope)
    return scope


# -- Quick Start Guide, 2. Data Processing ---------------------------------------------------------------------

LOADER_CRUMPETS_IMPORTS = """
import io
import os
import os.path as pt
from itertools import cycle

import msgpack
import msgpack_numpy
import numpy as np

from crumpets.dataloader import TurboDataLoader
from crumpets.workers import ClassificationWorker
from crumpets.presets import AUGMENTATION_TRAIN
"""

LOADER_BODY = """
def prepare_dataset():
    dsdir = 'tinyset'
    iterable = []
    # walk over all subdirectories containing the classes
    for cls_id, (cls_dir, _, imgs) in enumerate(list(os.walk(dsdir))[1:]):
        # inside a subdirectory specifying a class, walk over all images
        for img_path in imgs:
            # read the image
            with io.FileIO(pt.join(cls_dir, img_path)) as f:
                img = f.read()
            # put it inside a dictionary together with some class id
            dic = {'image': img, 'label': cls_id}
            # pack the dict using msgpack and append it to the result
            iterable.append(msgpack.packb(
               dic, use_bin_type=True,
               default=msgpack_numpy.encode
            ))
    return iterable

batch_size = 2
epochs = 3
nworkers = 2
sample_size = (3, 224, 224)

# prepare iterable
iterable = prepare_dataset()
num_samples = len(iterable)
cycler = cycle(iterable)  # necessary for multiple epochs

# create loader
loader = TurboDataLoader(
    cycler, batch_size,
    ClassificationWorker(  # Other workers are available, such as SaliencyWorkers
        (sample_size, np.uint8), ((1, ), np.int),
        # this actually means using default augmentations, found in ~crumpets.randomization.randomize_args
        image_rng=AUGMENTATION_TRAIN
    ),
    nworkers,
    length=num_samples,
)

with loader:
  for epoch in range(epochs):
     for iteration, mini_batch in loader:
         for sample in mini_batch:
             image = sample['image']
             label = sample['label']
"""

# -- Augmentation Guide -------------------------------------------------------------------------------------------

AUGMENTATION_CRUMPETS_IMPORTS = """
import numpy as np

from crumpets.presets import MixtureRNG
from crumpets.workers import ClassificationWorker
"""

CUSTOM_RNG_BODY = """
from crumpets.presets import MixtureRNG
rng = MixtureRNG(
    blur_range=(0.002, 0.0025),
    brightness_range=(-0.4, 0.4),
    contrast_range=(-0.5, 0.5),
    noise_range=(0.01, 1.0),
    aspect_sigma=2/48.0,
    shift_range=(-1, 1),
    scale_range=(0.5, 1.5),
    vmirror=0.5,
    rotation_sigma=18,
    color_range=(-0.25, 0.25),
)

worker_template = ClassificationWorker(
    (sample_size, np.uint8),
    ((1, ), np.int),
    image_rng=rng
)
"""

NO_AUGMENTATION_BODY = """
worker_template = ClassificationWorker(
    ((3, 256, 256), np.uint8, (128, 128, 128)),
    ((1, ), np.int),
    image_params=dict(scale_mode='longest'),
)
"""

#: As printed in the docs, without the label buffer that ClassificationWorker requires (in crumpets too).
ASPECT_BODY = """
from crumpets.presets import MixtureRNG
rng = MixtureRNG(prob=1.0, aspect_sigma=0.3)
worker_template = ClassificationWorker(
    ((3, 256, 256), np.uint8, (128, 128, 128)),
    image_params=dict(scale_mode='longest'),
    image_rng=rng
)
"""

#: "To keep it simple, from now on only the update dictionary is presented": name -> MixtureRNG arguments.
UPDATES = {
    "blur": "prob=1.0, blur_range=(1.50/448, 1.50/448)",
    "brightness": "prob=1.0, brightness_range=(0.45, 0.45)",
    "color": "prob=1.0, color_range=(-0.3, 0.3)",
    "contrast": "prob=1.0, contrast_range=(0.35, 0.35)",
    "hmirror": "prob=1.0, hmirror=1",
    "noise": "prob=1.0, noise_range=(0.2, 0.2)",
    "rotation": "prob=1.0, rotation_sigma=24",
    "scale in": "prob=1.0, scale_range=(1.4, 1.4)",
    "scale out": "prob=1.0, scale_range=(0.6, 0.6)",
    "shear": "prob=1.0,  shear_range=(0.06, 0.06)",
    "shift up": "prob=1.0, shift_range=(1, 1)",
    "shift down": "prob=1.0, shift_range=(-1, -1)",
    "vmirror": "prob=1.0, vmirror=1",
}

# -- Quick Start Guide, 3. Training --------------------------------------------------------------------------------

TRAINING_CRUMPETS_IMPORTS = """
import torch
from torch.optim import SGD

from crumpets.torch.dataloader import TorchTurboDataLoader
from crumpets.torch.utils import Unpacker
from crumpets.torch.policy import PolyPolicy
from crumpets.torch.loss import CrossEntropyLoss
from crumpets.torch.metrics import AccuracyMetric
"""

NET_BODY = """
class Net(torch.nn.Module):
    def forward(self, sample):
        x = sample['image'].float()
        x = foo(x)
        sample['output'] = x
        return sample
net = Net()
"""

UNPACKER_BODY = """
class Net(torch.nn.Module):
   def forward(self, sample):
      return foo(sample)
net = Unpacker(Net(), output_key, input_key)
"""

#: The CPU branch of the docs' device selection (``is_cpu_only`` and ``ParallelApply`` have no port: Lightning
#: picks the devices), then the rest of the training section up to the crumpets ``Trainer``.
TRAINING_BODY = """
network = Unpacker(Net())

# abstract methods, implementation can be found in previous section
train = make_loader(
    train_set, batch_size, devices=devices
)
val = make_loader(
    val_set, batch_size, devices=devices
)

optimizer = SGD([
    {'params': network.parameters(), 'lr': lr},
], momentum=momentum, weight_decay=1e-4)
scheduler = PolyPolicy(optimizer, epochs, 1)

loss = CrossEntropyLoss(target_key='label', output_key='output')
if cuda:
   loss = loss.cuda()

metric = AccuracyMetric(target_key='label', output_key='output')
"""

#: TorchTurboDataLoader in crumpets' positional order: (iterable, batch_size, worker_template, nworkers,
#: length, num_mini_batches, start_iteration, device).
MAKE_LOADER = """
def make_loader(dataset, batch_size, devices):
    worker = ClassificationWorker(((3, 32, 32), np.uint8), ((1, ), np.int), image_rng=AUGMENTATION_TRAIN)
    return TorchTurboDataLoader(cycle(dataset), batch_size, worker, 2, len(dataset), 1, 0, devices)
"""

MAKE_LOADER_CRUMPETS_IMPORTS = """
from itertools import cycle

import numpy as np

from crumpets.torch.dataloader import TorchTurboDataLoader
from crumpets.workers import ClassificationWorker
from crumpets.presets import AUGMENTATION_TRAIN
"""
