"""Tools around the library, never imported by its core (``data``, ``modules``, ``callbacks``).

- :mod:`crumpets_lightning.tools.lightning_cli`: the ``LightningCLI`` behind ``crumpets-lightning fit`` (short
  class names, the presets that ``None`` defaults stand for);
- :mod:`crumpets_lightning.tools.demo`: the digits demo (data builder and run), needs the ``demo`` extra;
- :mod:`crumpets_lightning.tools.bench`: the loader benchmark harness, needs the ``demo`` extra for its photos.

The console script (:mod:`crumpets_lightning.cli`) imports these modules only when a subcommand needs them.
"""

from __future__ import annotations

import importlib.util

__all__ = ["MissingExtraError", "require_extra"]


class MissingExtraError(ImportError):
    """An optional dependency of a tool is not installed; the message names the extra to install."""


def require_extra(module: str, extra: str, purpose: str) -> None:
    """Raise :class:`MissingExtraError` unless ``module`` can be imported.

    Args:
        module: the top-level module the tool needs (e.g. ``"sklearn"``).
        extra: the ``crumpets-lightning`` extra that installs it (e.g. ``"demo"``).
        purpose: what needs it, for the message (e.g. ``"the digits demo"``).

    Raises:
        MissingExtraError: ``module`` is not installed.
    """
    if importlib.util.find_spec(module) is None:
        raise MissingExtraError(
            f"{purpose} needs the optional package {module!r}, which is not installed: "
            f"pip install 'crumpets-lightning[{extra}]'"
        )
