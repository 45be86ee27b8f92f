"""A loopback HTTP server for one folder that answers byte-range requests and records every request.

Used by the remote-source tests and by ``benchmarks/sources_throughput.py``. It binds 127.0.0.1 only.

Example::

    with RangeServer(folder) as server:
        MsgpackDataset(server.url("train.msgpack"))
"""

from __future__ import annotations

import http.server
import os
import re
import threading
import time
from email.utils import formatdate
from pathlib import Path
from typing import Any

_RANGE = re.compile(r"^bytes=(\d+)-(\d*)$")


class _Handler(http.server.BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body go out as two writes: no 40 ms delayed-ACK stall

    def log_message(self, format: str, *args: Any) -> None:
        pass  # quiet; requests are recorded instead

    def _target(self) -> Path | None:
        path = (self.server.root / self.path.lstrip("/").split("?", 1)[0]).resolve()
        if self.server.root not in path.parents or not path.is_file():
            return None
        return path

    def _answer(self, send_body: bool) -> None:
        if self.server.latency_s:
            time.sleep(self.server.latency_s)  # a network round trip
        range_header = self.headers.get("Range")
        with self.server.lock:
            self.server.requests.append((self.command, self.path, range_header))
        path = self._target()
        if path is None:
            self.send_response(404)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        stat = path.stat()
        start, stop, status = 0, stat.st_size, 200
        match = _RANGE.match(range_header or "")
        if match and self.server.ranges:
            start = int(match.group(1))
            stop = min(stat.st_size, int(match.group(2)) + 1) if match.group(2) else stat.st_size
            status = 206
        self.send_response(status)
        self.send_header("Content-Length", str(stop - start))
        self.send_header("Last-Modified", formatdate(stat.st_mtime, usegmt=True))
        self.send_header("Accept-Ranges", "bytes" if self.server.ranges else "none")
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{stop - 1}/{stat.st_size}")
        self.end_headers()
        if send_body:
            with open(path, "rb") as f:
                self.wfile.write(os.pread(f.fileno(), stop - start, start))

    def do_GET(self) -> None:
        self._answer(send_body=True)

    def do_HEAD(self) -> None:
        self._answer(send_body=False)


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, root: Path, ranges: bool, latency_s: float) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.root = root.resolve()
        self.ranges = ranges
        self.latency_s = latency_s
        self.lock = threading.Lock()
        self.requests: list[tuple[str, str, str | None]] = []


class RangeServer:
    """Serve ``root`` on 127.0.0.1 (a free port) in a thread while the ``with`` block runs.

    Args:
        root: the folder to serve.
        ranges: answer ``Range`` requests with 206 partial content; False ignores them (a server without
            range support).
        latency_s: seconds every answer waits first, as over a network (remote storage: milliseconds).
    """

    def __init__(self, root: str | os.PathLike[str], ranges: bool = True, latency_s: float = 0.0) -> None:
        self._server = _Server(Path(root), ranges, latency_s)
        self._thread = threading.Thread(target=self._server.serve_forever, name="range-server", daemon=True)

    def url(self, name: str) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}/{name}"

    @property
    def requests(self) -> list[tuple[str, str, str | None]]:
        """``(method, path, Range header)`` of every request so far, oldest first."""
        with self._server.lock:
            return list(self._server.requests)

    def clear(self) -> None:
        with self._server.lock:
            self._server.requests.clear()

    def __enter__(self) -> RangeServer:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)
