"""The crumpets training toolkit for Lightning: module base, losses, metrics, LR policies, GPU augmentation."""

from __future__ import annotations

from crumpets_lightning._lazy import lazy_getattr

_NAMES = {
    "CrumpetsModule": "module",
    "default_optimizer": "module",
    # losses
    "CrossEntropyLoss": "losses",
    "L1Loss": "losses",
    "LabelSmoothing": "losses",
    "MSELoss": "losses",
    "NLLLoss": "losses",
    "NSSLoss": "losses",
    # metrics
    "AccuracyMetric": "metrics",
    "AverageMetric": "metrics",
    "CombinedMetric": "metrics",
    "ConfusionMatrix": "metrics",
    "MSELossMetric": "metrics",
    "MSEMetric": "metrics",
    "NSSMetric": "metrics",
    "NoopMetric": "metrics",
    # LR policies
    "CrumpetsPolicy": "policies",
    "NoopPolicy": "policies",
    "PolyPolicy": "policies",
    "SigmoidPolicy": "policies",
    "RampPolicy": "policies",
    "ReduceLROnPlateau": "policies",
    # augmentation and utilities
    "Randomizer": "randomizer",
    "Normalize": "utils",
    "Unpacker": "utils",
}

__all__ = sorted(_NAMES)
__getattr__ = lazy_getattr(__name__, _NAMES)


def __dir__() -> list[str]:
    return __all__
