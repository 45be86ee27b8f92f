"""Fixtures for the source tests: a private cache folder per test and a loopback range server."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.data.sources.range_server import RangeServer


@pytest.fixture(autouse=True)
def private_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Indexes and remote samples that cannot live next to their file go here, never into ~/.cache."""
    folder = tmp_path / "cache"
    monkeypatch.setenv("CRUMPETS_LIGHTNING_CACHE", str(folder))
    return folder


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[Path, RangeServer]]:
    """A folder and an HTTP server on 127.0.0.1 that serves it with byte ranges (stopped after the test)."""
    root = tmp_path / "served"
    root.mkdir()
    with RangeServer(root) as server:
        yield root, server
