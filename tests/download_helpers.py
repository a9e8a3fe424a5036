"""A real HTTP server on 127.0.0.1 (port 0) for the download tests: a ThreadingHTTPServer in a thread, with routes
for a normal file (Range + ETag), a connection that drops halfway, a token-guarded redirect to another host name,
a redirect loop, 404, a web page and raw bodies. Every request is recorded in `server.requests`."""

from __future__ import annotations

import hashlib
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

TOKEN = "s3cret-token"


class Handler(BaseHTTPRequestHandler):
    """Routes: /files/<name> (Range, ETag), /flaky/<name> (drops mid-body), /api/download/<n> (token, redirect to
    another host name), /storage/<n>, /loop/a ↔ /loop/b, /missing (404), page.html, and raw bodies."""

    def log_message(self, *args):  # keep the test output clean
        pass

    def do_GET(self):  # noqa: N802 - http.server API
        srv = self.server
        parts = urllib.parse.urlsplit(self.path)
        path = parts.path
        srv.requests.append({"path": path, "host": self.headers.get("Host", ""), "range": self.headers.get("Range"),
                             "auth": self.headers.get("Authorization"), "if_range": self.headers.get("If-Range")})
        if path.startswith("/files/"):
            return self._serve(srv.files[path.rsplit("/", 1)[-1]])
        if path.startswith("/owner/"):  # a Hugging Face-like …/resolve/main/<file> link
            return self._serve(srv.files["lora.safetensors"])
        if path.startswith("/flaky/"):
            data = srv.files[path.rsplit("/", 1)[-1]]
            rng = self.headers.get("Range")
            if rng is None:
                return self._serve(data, cut=len(data) // 2)  # the first answer breaks off halfway
            if srv.mode == "broken":
                return self._serve(data, cut=0)  # nothing more arrives
            return self._serve(data)
        if path.startswith("/api/download/"):
            if self.headers.get("Authorization") != f"Bearer {TOKEN}":
                return self._status(401)
            return self._redirect(f"http://localhost:{srv.server_port}/storage/{path.rsplit('/', 1)[-1]}?sig=abc")
        if path.startswith("/storage/"):
            return self._serve(srv.files["lora.safetensors"],
                               disposition='attachment; filename="zkz-style.safetensors"')
        if path == "/loop/a":
            return self._redirect("/loop/b")
        if path == "/loop/b":
            return self._redirect("/loop/a")
        if path == "/page.html":
            return self._serve(b"<!DOCTYPE html><html><body>Log in to download</body></html>", ctype="text/html")
        return self._status(404)

    def _status(self, code):
        self.send_response(code)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def _redirect(self, location):
        self.send_response(302)
        self.send_header("Location", location)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def _serve(self, data: bytes, *, cut: int | None = None, disposition: str | None = None,
               ctype: str = "application/octet-stream"):
        etag = '"' + hashlib.md5(data).hexdigest() + '"'
        start = 0
        rng = self.headers.get("Range")
        if_range = self.headers.get("If-Range")
        if rng and (if_range is None or if_range == etag):
            start = int(rng.split("=")[1].split("-")[0])
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
        self.send_header("Content-Type", ctype)
        self.send_header("ETag", etag)
        if disposition:
            self.send_header("Content-Disposition", disposition)
        self.end_headers()
        self.wfile.write(body if cut is None else body[:cut])
        self.wfile.flush()
        self.close_connection = True  # (HTTP/1.0 closes anyway: a cut body ends with a closed connection)



def start_server(files: dict[str, bytes]) -> ThreadingHTTPServer:
    """Serve `files` (name → bytes); `server.url` is the base URL; call `stop_server` when done."""
    srv = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    srv.daemon_threads = True
    srv.files = files
    srv.requests = []
    srv.mode = "good"
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    srv.url = f"http://127.0.0.1:{srv.server_port}"
    return srv


def stop_server(srv: ThreadingHTTPServer) -> None:
    srv.shutdown()
    srv.server_close()
