"""Shared fixtures. The autouse ``no_leaks`` fixture fails any test that leaves worker processes,
``/dev/shm`` segments, private socket directories or files in the working directory behind."""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import re
import signal
import tempfile
import time
from pathlib import Path

import pytest

try:
    from hypothesis import settings

    # No example database: it would write a .hypothesis folder into the working directory.
    settings.register_profile("crumpets", database=None, deadline=None)
    settings.load_profile("crumpets")
except ImportError:  # pragma: no cover - hypothesis is a dev dependency
    pass

SHM_DIR = Path("/dev/shm")
LEAK_WAIT_S = 5.0


def _process_table() -> dict[int, tuple[int, str]]:
    """pid -> (parent pid, state letter) for every process visible in /proc."""
    table = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        # the command name is in parentheses and may contain spaces
        rest = stat[stat.rfind(")") + 2 :].split()
        table[int(entry)] = (int(rest[1]), rest[0])
    return table


def descendants(pid: int | None = None) -> dict[int, str]:
    """Every live or zombie descendant of ``pid`` (default: this process): pid -> state letter."""
    root = os.getpid() if pid is None else pid
    table = _process_table()
    children: dict[int, list[int]] = {}
    for child, (parent, _) in table.items():
        children.setdefault(parent, []).append(child)
    found: dict[int, str] = {}
    stack = [root]
    while stack:
        for child in children.get(stack.pop(), []):
            if child not in found:
                found[child] = table[child][1]
                stack.append(child)
    return found


def _cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return "?"


_OWNER_PID = re.compile(r"crumpets-lightning-(\d+)-")


def _owned_by_someone_else(name: str) -> bool:
    """True for entries whose owner pid (part of the name) is a live process outside this test's tree.

    Another program on the machine (a demo, a second test run) may hold segments while a test runs; those
    are not this test's leaks. Entries of dead owners and of this process tree always count.
    """
    match = _OWNER_PID.search(name)
    if match is None:
        return False
    pid = int(match.group(1))
    if pid == os.getpid() or pid in descendants():
        return False
    return os.path.exists(f"/proc/{pid}")


def crumpets_shm_segments() -> set[str]:
    if not SHM_DIR.exists():
        return set()
    return {name for name in os.listdir(SHM_DIR) if "crumpets" in name and not _owned_by_someone_else(name)}


def crumpets_socket_dirs() -> set[str]:
    tmp = tempfile.gettempdir()
    return {
        name for name in os.listdir(tmp) if name.startswith("crumpets-lightning-") and not _owned_by_someone_else(name)
    }


def _reap() -> None:
    multiprocessing.active_children()  # joins finished multiprocessing children
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


@pytest.fixture(autouse=True)
def no_leaks(request: pytest.FixtureRequest):
    """Fail the test if it leaves child processes, /dev/shm segments, socket dirs or cwd files behind."""
    if request.node.get_closest_marker("allow_leaks"):
        yield
        return
    cwd = Path.cwd()
    before_cwd = set(os.listdir(cwd))
    before_shm = crumpets_shm_segments()
    before_sock = crumpets_socket_dirs()
    before_procs = set(descendants())
    yield
    deadline = time.monotonic() + LEAK_WAIT_S
    while True:
        _reap()
        procs = {p: s for p, s in descendants().items() if p not in before_procs}
        shm = crumpets_shm_segments() - before_shm
        sock = crumpets_socket_dirs() - before_sock
        if not (procs or shm or sock) or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    problems = []
    if procs:
        described = [f"{p} ({'zombie' if s == 'Z' else s}) {_cmdline(p)}" for p, s in procs.items()]
        problems.append("processes: " + "; ".join(described))
        for p in procs:  # clean up so one leak does not cascade into later tests
            with contextlib.suppress(OSError):
                os.kill(p, signal.SIGKILL)
        _reap()
    if shm:
        problems.append(f"/dev/shm segments: {sorted(shm)}")
    if sock:
        problems.append(f"socket directories in {tempfile.gettempdir()}: {sorted(sock)}")
    new_files = set(os.listdir(cwd)) - before_cwd
    if new_files:
        problems.append(f"files in the working directory {cwd}: {sorted(new_files)}")
    if problems:
        pytest.fail("test left resources behind: " + " | ".join(problems), pytrace=False)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "allow_leaks: the test cleans up after itself in its own way")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    import torch

    if torch.cuda.is_available():
        return
    skip_gpu = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip_gpu)
