#!/usr/bin/env python3
"""A plain HTTP/1.1 upstream for gateway measurements (keep-alive, chunked bodies).

  upstream-sink.py PORT

PUT/POST any path: reads the body as it arrives (Content-Length or chunked), keeping
nothing but its SHA-256, and answers {"bytes": N, "sha256": "..."}.
GET /download?bytes=N: sends N zero bytes, chunked, 64 KiB at a time.
"""
import hashlib, json, sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse


class Sink(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def _body(self):
        h, n = hashlib.sha256(), 0
        if "chunked" in self.headers.get("transfer-encoding", "").lower():
            while True:
                size = int(self.rfile.readline().split(b";")[0], 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    break
                left = size
                while left:
                    piece = self.rfile.read(min(left, 1 << 16))
                    if not piece:
                        raise ConnectionError("body cut short")
                    h.update(piece)
                    left -= len(piece)
                n += size
                self.rfile.readline()
        else:
            left = int(self.headers.get("content-length") or 0)
            while left:
                piece = self.rfile.read(min(left, 1 << 16))
                if not piece:
                    raise ConnectionError("body cut short")
                h.update(piece)
                n += len(piece)
                left -= len(piece)
        return n, h.hexdigest()

    def _answer(self):
        n, digest = self._body()
        out = json.dumps({"bytes": n, "sha256": digest}).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)

    do_PUT = do_POST = _answer

    def do_GET(self):
        q = parse_qs(urlparse(self.path).query)
        total = int(q.get("bytes", ["0"])[0])
        self.send_response(200)
        self.send_header("content-type", "application/octet-stream")
        self.send_header("transfer-encoding", "chunked")
        self.end_headers()
        zeros = bytes(1 << 16)
        while total:
            n = min(total, len(zeros))
            self.wfile.write(b"%x\r\n" % n + zeros[:n] + b"\r\n")
            total -= n
        self.wfile.write(b"0\r\n\r\n")

    def log_message(self, *a):
        pass


ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Sink).serve_forever()
