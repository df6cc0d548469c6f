"""Servers for STAC tests, on 127.0.0.1: a static file server that answers HTTP range requests and counts the bytes
it sends (Python's http.server sends whole files), and a real STAC API (``rustac serve``, its in-memory backend)
loaded with a collection and its items."""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from http import HTTPStatus
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import IO, Any, BinaryIO

_RANGE = re.compile(r"bytes=(\d*)-(\d*)$")


class ByteCounter:
    """Bytes of file content sent, per path and in all; requests, per path."""

    def __init__(self) -> None:
        self.sent: Counter[str] = Counter()
        self.requests: Counter[str] = Counter()
        self.authorizations: set[str] = set()
        """``Authorization`` headers seen on file requests."""
        self._lock = threading.Lock()

    def add(self, path: str, nbytes: int) -> None:
        with self._lock:
            self.sent[path] += nbytes
            self.requests[path] += 1

    @property
    def total(self) -> int:
        return sum(self.sent.values())

    def reset(self) -> None:
        with self._lock:
            self.sent.clear()
            self.requests.clear()
            self.authorizations.clear()


class RangeHandler(SimpleHTTPRequestHandler):
    """Serves a folder: whole files, or one byte range (``Range: bytes=a-b``, ``a-``, ``-n``) as 206."""

    counter: ByteCounter

    def __init__(self, *args: object, counter: ByteCounter, **kwargs: object) -> None:
        self.counter = counter
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]

    def log_message(self, format: str, *args: object) -> None:
        pass

    def send_head(self) -> io.BytesIO | BinaryIO | None:
        if self.path in ("/__bytes__", "/__reset__"):
            return self._control()
        path = self.translate_path(self.path)
        if "Authorization" in self.headers:
            self.counter.authorizations.add(self.headers["Authorization"])
        if os.path.isdir(path) or not os.path.isfile(path):
            self.send_error(HTTPStatus.NOT_FOUND, "File not found")
            return None
        size = os.path.getsize(path)
        start, end = 0, size - 1
        match = _RANGE.match(self.headers.get("Range", "").strip())
        if match and (match[1] or match[2]):
            if match[1]:
                start, end = int(match[1]), min(size - 1, int(match[2]) if match[2] else size - 1)
            else:
                start = max(0, size - int(match[2]))
            if start >= size or start > end:
                self.send_response(HTTPStatus.REQUESTED_RANGE_NOT_SATISFIABLE)
                self.send_header("Content-Range", f"bytes */{size}")
                self.end_headers()
                return None
            self.send_response(HTTPStatus.PARTIAL_CONTENT)
            self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
        else:
            self.send_response(HTTPStatus.OK)
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(end - start + 1))
        self.end_headers()
        self._span = (path, start, end - start + 1)
        return open(path, "rb")  # closed by do_GET / do_HEAD

    def _control(self) -> io.BytesIO:
        if self.path == "/__reset__":
            self.counter.reset()
        body = json.dumps({"sent": self.counter.sent, "authorizations": sorted(self.counter.authorizations)}).encode()
        self.send_response(HTTPStatus.OK)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self._span = ("", 0, -1)
        return io.BytesIO(body)

    def copyfile(self, source: Any, outputfile: Any) -> None:
        path, start, length = self._span
        if length < 0:  # a control answer, not counted
            shutil.copyfileobj(source, outputfile)
            return
        source.seek(start)
        left = length
        while left > 0:
            chunk = source.read(min(left, 1 << 16))
            if not chunk:
                break
            outputfile.write(chunk)
            left -= len(chunk)
        self.counter.add(os.path.relpath(path, self.directory), length - left)


class _QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: object, client_address: object) -> None:
        """A client that hangs up early (GDAL, after a 404 or once it has its bytes) is not an error."""
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)  # type: ignore[arg-type]


def serve_folder(folder: Path, port_file: Path) -> None:
    """Serve ``folder`` on 127.0.0.1 (a free port, written to ``port_file``) until killed. ``GET /__bytes__`` answers
    the bytes sent so far per path and the Authorization headers seen (JSON), ``GET /__reset__`` forgets them."""
    counter = ByteCounter()
    handler = partial(RangeHandler, directory=str(folder), counter=counter)
    server = _QuietServer(("127.0.0.1", 0), handler)
    port_file.write_text(str(server.server_address[1]))
    server.serve_forever()


@dataclass
class FileServer:
    """A :func:`serve_folder` process: its base URL; :meth:`sent` and :meth:`reset` read and zero its counts."""

    url: str

    def _counts(self) -> dict[str, Any]:
        with urllib.request.urlopen(f"{self.url}/__bytes__", timeout=10) as answer:
            return dict(json.load(answer))

    def sent(self) -> dict[str, int]:
        """Bytes of file content sent per path (relative to the folder) since the start or the last reset."""
        return dict(self._counts()["sent"])

    def authorizations(self) -> list[str]:
        """The ``Authorization`` headers seen on file requests."""
        return list(self._counts()["authorizations"])

    def reset(self) -> None:
        urllib.request.urlopen(f"{self.url}/__reset__", timeout=10).close()


@contextmanager
def range_file_server(folder: Path, timeout_s: float = 30.0) -> Iterator[FileServer]:
    """Serve ``folder`` with range requests from a child process on 127.0.0.1 (GDAL, reading in this process, may
    hold the GIL while it waits for an answer: a server thread here would never send it)."""
    with tempfile.TemporaryDirectory() as tmp:
        port_file = Path(tmp) / "port"
        code = "import sys; from pathlib import Path; from geoseg.testutils.stac_server import serve_folder; " \
               "serve_folder(Path(sys.argv[1]), Path(sys.argv[2]))"  # fmt: skip
        proc = subprocess.Popen([sys.executable, "-c", code, str(folder), str(port_file)])
        try:
            deadline = time.monotonic() + timeout_s
            while not port_file.exists() or not port_file.read_text():
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"the file server did not start (exit {proc.poll()})")
                time.sleep(0.05)
            yield FileServer(f"http://127.0.0.1:{port_file.read_text()}")
        finally:
            _stop(proc)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def rustac_binary() -> str | None:
    """The ``rustac`` command of this Python (the PyPI package ``rustac``), or None."""
    beside = Path(sys.executable).parent / "rustac"
    return str(beside) if beside.exists() else shutil.which("rustac")


@contextmanager
def stac_api(*hrefs: Path, timeout_s: float = 30.0) -> Iterator[str]:
    """A real STAC API (rustac's server, in-memory backend) on 127.0.0.1 serving the given collection and item
    files; yields its root URL. Stopped (by its pid) on exit."""
    binary = rustac_binary()
    if binary is None:
        raise RuntimeError("rustac is not installed: pip install rustac (in the test extra)")
    address = f"127.0.0.1:{free_port()}"
    with tempfile.TemporaryFile() as log:  # a file, not a pipe: a server that logs much never blocks on it
        proc = subprocess.Popen([binary, "serve", "--addr", address, *map(str, hrefs)], stdout=log, stderr=log)
        url = f"http://{address}"
        try:
            _wait_for(url, proc, log, timeout_s)
            yield url
        finally:
            _stop(proc)


def _wait_for(url: str, proc: subprocess.Popen[bytes], log: IO[bytes], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            log.seek(0)
            raise RuntimeError(f"rustac serve exited with {proc.returncode}: {log.read().decode(errors='replace')}")
        try:
            with urllib.request.urlopen(f"{url}/collections", timeout=2):
                return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            time.sleep(0.2)
    raise RuntimeError(f"rustac serve did not answer on {url} within {timeout_s:.0f} s")
