"""A local HTTP server for the download tests: range requests, ETags, faults on demand.

It serves in-memory files at given paths (query strings ignored) on 127.0.0.1 and
can drop a connection after N bytes of a file, send a file a byte at a time, answer 404, or ignore
``Range``.
Every request is logged as ``(method, path, Range header)``.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
import time
import urllib.parse
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class FileServer:
    files: dict[str, bytes] = field(default_factory=dict)
    etags: dict[str, str] = field(default_factory=dict)
    drops: dict[str, list[int]] = field(default_factory=dict)  # path -> bytes sent before closing, per request
    honour_range: bool = True
    trickle: dict[str, float] = field(default_factory=dict)  # path -> seconds between single bytes sent
    log: list[tuple[str, str, str | None]] = field(default_factory=list)
    sent: int = 0

    def add(self, path: str, body: bytes | Any, *, etag: bool = False) -> None:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        self.files[path] = data
        if etag:
            self.etags[path] = hashlib.md5(data).hexdigest()

    def start(self) -> str:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:  # keep test output quiet
                pass

            def _serve(self, head: bool) -> None:
                path = urllib.parse.urlsplit(self.path).path
                rng = self.headers.get("Range")
                server.log.append((self.command, path, rng))
                if path not in server.files:
                    self.send_response(404)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                data = server.files[path]
                start = 0
                m = re.fullmatch(r"bytes=(\d+)-", rng or "")
                if m and server.honour_range:
                    start = int(m.group(1))
                    if start >= len(data):
                        self.send_response(416)
                        self.send_header("Content-Range", f"bytes */{len(data)}")
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                        return
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                else:
                    self.send_response(200)
                body = data[start:]
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Accept-Ranges", "bytes")
                if path in server.etags:
                    self.send_header("ETag", f'"{server.etags[path]}"')
                self.end_headers()
                if head:
                    return
                drops = server.drops.get(path)
                if drops:
                    body = body[: drops.pop(0)]
                    self.close_connection = True
                if path in server.trickle:  # a server that is alive but hardly sends anything
                    try:
                        for k in range(len(body)):
                            self.wfile.write(body[k:k + 1])
                            self.wfile.flush()
                            server.sent += 1
                            time.sleep(server.trickle[path])
                    except (BrokenPipeError, ConnectionResetError):
                        pass
                    return
                self.wfile.write(body)
                self.wfile.flush()
                server.sent += len(body)

            def do_GET(self) -> None:
                self._serve(head=False)

            def do_HEAD(self) -> None:
                self._serve(head=True)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def gets(self, suffix: str) -> list[str | None]:
        """The Range headers of the GET requests whose path ends with ``suffix``."""
        return [rng for method, path, rng in self.log if method == "GET" and path.endswith(suffix)]
