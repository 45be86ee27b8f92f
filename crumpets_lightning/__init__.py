"""crumpets-lightning: the crumpets image pipeline as a first-class PyTorch Lightning citizen.

Subpackages: :mod:`crumpets_lightning.data` (loader, workers, augmentation, ``CrumpetsDataModule``),
:mod:`crumpets_lightning.modules` (``CrumpetsModule``, losses, metrics, LR policies, ``Randomizer``) and
:mod:`crumpets_lightning.callbacks` (hooks, snapshots, JSON logs, data-wait monitor).
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
