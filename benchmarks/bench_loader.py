"""Loader throughput against the torch ``DataLoader`` doing the same work: ``crumpets-lightning bench``.

Run from a source checkout: ``python benchmarks/bench_loader.py [--quick] [--json out.json]``; see
:mod:`crumpets_lightning.tools.bench` for what is measured.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from crumpets_lightning.tools.bench import main

if __name__ == "__main__":
    sys.exit(main())
