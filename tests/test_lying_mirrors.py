"""Mirrors that lie at the HTTP level: every answer ends in one DownloadError naming the URL, within the timeout."""
from __future__ import annotations

import socket
import threading
import time

import pytest

from skinlib.fetch import DownloadError, download, fetch_json


class RawServer:
    """Answers every connection with the same bytes, sent in pieces with a pause between them."""

    def __init__(self, answer: bytes, *, piece: int = 1 << 20, pause: float = 0.0) -> None:
        self.answer, self.piece, self.pause = answer, piece, pause
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}/listing"
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._answer, args=(conn,), daemon=True).start()

    def _answer(self, conn: socket.socket) -> None:
        try:
            conn.recv(65536)
            for i in range(0, len(self.answer), self.piece):
                conn.sendall(self.answer[i:i + self.piece])
                time.sleep(self.pause)
        except OSError:
            pass
        finally:
            conn.close()


def _ok(body: bytes, extra: str = "") -> bytes:
    return f"HTTP/1.1 200 OK\r\nContent-Length: {len(body)}\r\n{extra}\r\n".encode() + body


CASES = {
    "a bad status line": (b"HELLO THERE\r\n\r\n", "malformed HTTP answer"),
    "a 100 KB header": (b"HTTP/1.1 200 OK\r\nX-Big: " + b"a" * 100_000 + b"\r\n\r\n{}", "malformed HTTP answer"),
    "150 headers": (b"HTTP/1.1 200 OK\r\n" + b"".join(b"X-%d: 1\r\n" % i for i in range(150)) + b"\r\n{}",
                    "malformed HTTP answer"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_a_malformed_answer_is_one_error_naming_the_url(case):
    answer, words = CASES[case]
    server = RawServer(answer)
    with pytest.raises(DownloadError, match=words) as err:
        fetch_json(server.url, timeout=5)
    assert server.url in str(err.value)


def test_a_listing_dripped_byte_by_byte_is_given_up_within_the_timeout():
    server = RawServer(_ok(b'{"data": "' + b"x" * 200 + b'"}'), piece=1, pause=0.2)
    start = time.monotonic()
    with pytest.raises(DownloadError, match=r"bytes/s|did not answer within"):
        fetch_json(server.url, timeout=2)
    assert time.monotonic() - start < 10


def test_headers_dripped_byte_by_byte_are_given_up_within_the_timeout():
    server = RawServer(_ok(b"{}", extra="X-Slow: " + "s" * 200 + "\r\n"), piece=1, pause=0.1)
    start = time.monotonic()
    with pytest.raises(DownloadError, match="did not answer within 2 s"):
        fetch_json(server.url, timeout=2)
    assert time.monotonic() - start < 6


def test_a_content_length_that_is_not_a_number_is_named(tmp_path):
    server = RawServer(b"HTTP/1.1 200 OK\r\nContent-Length: abc\r\nConnection: close\r\n\r\nhello")
    with pytest.raises(DownloadError, match=r"Content-Length 'abc'|malformed HTTP answer") as err:
        download(server.url, tmp_path / "f.bin", checksum=None, timeout=5, progress=False)
    assert "127.0.0.1" in str(err.value)


def test_a_server_answering_416_to_everything_is_named(tmp_path):
    server = RawServer(b"HTTP/1.1 416 Range Not Satisfiable\r\nContent-Range: bytes */999\r\nContent-Length: 0\r\n"
                       b"Connection: close\r\n\r\n")
    (tmp_path / "f.bin.part").write_bytes(b"x" * 10)
    with pytest.raises(DownloadError, match="HTTP 416") as err:
        download(server.url, tmp_path / "f.bin", checksum=None, timeout=5, progress=False)
    assert server.url in str(err.value)


def test_listing_entries_of_the_wrong_shape_are_named(monkeypatch):
    from skinlib.data import download as dl

    def listing(files):
        monkeypatch.setattr(dl, "fetch_json", lambda *a, **k: {"data": {"latestVersion": {"files": files}}})
        return dl.dataverse_files(mirror=None, timeout=5)

    with pytest.raises(DownloadError, match="without a usable filename and id"):
        listing([{"dataFile": {"id": 5}}])
    with pytest.raises(DownloadError, match="without a usable filename and id"):
        listing([{"dataFile": {"filename": "HAM10000_metadata.tab"}}])
    with pytest.raises(DownloadError, match="not a list"):
        listing({"a": 1})
    entry = listing([{"dataFile": {"filename": "HAM10000_metadata.tab", "id": 7, "md5": 12345}}])
    source = next(s for s in dl.SOURCES if s.name == "HAM10000_metadata.tab")
    with pytest.raises(DownloadError, match="no usable checksum"):  # a numeric MD5 checks nothing
        dl.dataverse_source(source, entry)
