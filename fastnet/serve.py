"""`fastnet serve`: draw a digit (or upload an image) in the browser and watch the network read it.

The standard library's ThreadingHTTPServer does the HTTP (no hand-written
parsing, no dependency; a thread per connection, which the nogil kernels allow).
One page, everything inline (no CDN): a canvas for mouse or touch, Clear, an
upload button, the top-3 classes as bars, and the image the network saw (at its input size).

    GET  /          the page
    POST /predict   body: a PNG or JPEG image -> {"top": [{"label", "probability"} x3], "seen": {"height",
                    "width", "channels", "pixels": the input row as ints}}
                    411 without a Content-Length, 400 if it is invalid (negative, not a number, several
                    that differ) or the body is not an image, 413 if it is over MAX_BODY (the body is not
                    read), 408 if the request does not arrive in time, 503 if max_connections are open,
                    500 for a bug (one line on stderr); every error is JSON {"error": ...}

Untrusted clients cannot hold it: every wait on a socket ends after `timeout`
seconds, and a request must arrive whole (headers and body) within
`request_timeout` of its first byte, so a slowloris is cut off too. Memory is
bounded by two caps: at most max_connections bodies of at most MAX_BODY bytes
are held, and at most `workers` images are decoded at once, each within
preprocess.MAX_PIXELS and taking at most about 16 bytes a pixel (an RGBA image
with transparency, decoded and composited). So requests take at most about

    max_connections * MAX_BODY + workers * 16 * MAX_PIXELS bytes

which is 64 * 8 MB + 4 * 640 MB, about 3 GB, with the defaults (1.8 GB on 2 cores).
"""

from __future__ import annotations

import io
import json
import os
import re
import selectors
import socket
import sys
import threading
import time
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np

from .trained import TrainedModel
from .errors import FastnetError
from .preprocess import load_image

MAX_BODY = 8 << 20  # 8 MB: any photo of a digit, not a denial of service
BUSY = json.dumps({"error": "the server is busy: try again in a moment"}).encode()
LINGER = 2.0  # seconds a refused client has to finish sending before its connection is closed
MAX_LINGERING = 256  # refused connections drained at once; past that they are closed at once


def prediction(model: TrainedModel, body: bytes) -> dict:
    prep = model.prep()
    row = load_image(body, prep)
    probabilities = model.predict_proba(row[None, :])[0]
    order = np.argsort(-probabilities, kind="stable")[:3]
    return {"top": [{"label": model.class_names[k], "probability": round(float(probabilities[k]), 6)}
                    for k in order],
            "seen": {"height": prep.height, "width": prep.width, "channels": prep.channels, "pixels": row.tolist()}}


class LateRequest(Exception):
    """A request began but did not arrive in time; answered 408. (Not a TimeoutError: http.server closes the
    connection on those without a word, which is right only for a client idle between requests.)"""


class _Arrival(io.RawIOBase):
    """A connection's incoming bytes: each wait at most `timeout`, and a request's bytes due within
    `limit` of its first (`deadline` is reset to None between requests)."""

    def __init__(self, sock, timeout: float, limit: float):
        self.sock, self.timeout, self.limit, self.deadline = sock, timeout, limit, None

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        wait = self.timeout
        if self.deadline is not None:
            wait = min(wait, self.deadline - time.monotonic())
            if wait <= 0:
                raise LateRequest(f"the request took over {self.limit:g} s to arrive")
        self.sock.settimeout(wait)
        try:
            received = self.sock.recv_into(buffer)
        except TimeoutError:
            if self.deadline is None:
                raise  # idle between requests: the connection is closed quietly
            raise LateRequest(f"nothing arrived for {wait:g} s") from None
        finally:
            self.sock.settimeout(self.timeout)  # writes get the full timeout
        if received and self.deadline is None:
            self.deadline = time.monotonic() + self.limit
        return received


def _log(message: str) -> None:
    print(f"fastnet serve: {message}", file=sys.stderr, flush=True)


def make_handler(model: TrainedModel, page: bytes, *, timeout: float, request_timeout: float, workers: int):
    computing = threading.BoundedSemaphore(workers)

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        # What a request is taken to speak until its line is read: http.server's HTTP/0.9 answers a malformed
        # request line (garbage, "HTTP/2.0") with a bare body and no status line, which no client reads as an error.
        default_request_version = "HTTP/1.0"
        # Headers and body go out as two writes: with Nagle's algorithm on, a keep-alive client's delayed
        # ACK holds the body back for tens of milliseconds.
        disable_nagle_algorithm = True

        def log_message(self, format, *args):  # quiet: one line per request is noise here
            pass

        def setup(self):
            super().setup()
            self.rfile.close()  # the plain socket file: replaced by one that keeps the time limits
            self.rfile = io.BufferedReader(_Arrival(self.connection, timeout, request_timeout))

        def handle_one_request(self):
            """One request; a slow one gets 408, a bug 500, and a client gone away a closed connection."""
            self.rfile.raw.deadline, self.answered = None, False
            self.command = self.path = self.requestline = ""  # parse_request sets them; _fail may come first
            self.request_version = self.protocol_version
            try:
                super().handle_one_request()  # an idle client's timeout is handled in there: closed quietly
            except LateRequest as error:
                self._fail(HTTPStatus.REQUEST_TIMEOUT, str(error))
            except OSError:  # reset, broken pipe, a write that timed out: nobody to answer
                self.close_connection = True
            except Exception as error:
                _log(f"{self.command} {self.path}: {type(error).__name__}: {error}")
                self._fail(HTTPStatus.INTERNAL_SERVER_ERROR, f"internal error ({type(error).__name__})")

        def _fail(self, status: int, message: str) -> None:
            self.close_connection = True  # the rest of the request, if any, was not read
            if not self.answered:
                try:
                    self._json(status, {"error": message})
                except OSError:
                    pass

        def send_error(self, code, message=None, explain=None):  # http.server's own errors: JSON too, not HTML
            self._refuse(code, message or HTTPStatus(code).phrase)

        def send_response(self, *args, **kwargs):
            self.answered = True
            super().send_response(*args, **kwargs)

        def _send(self, status: int, body: bytes, content_type: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            if self.close_connection:
                self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(body)

        def _json(self, status: int, payload: dict) -> None:
            self._send(status, json.dumps(payload).encode(), "application/json")

        def _refuse(self, status: int, message: str) -> None:
            self.close_connection = True  # the body is not read: this connection cannot carry another
            self._json(status, {"error": message})

        def body_length(self) -> int | None:
            """The Content-Length, or None after answering why it will not be read."""
            if "Transfer-Encoding" in self.headers:
                self._refuse(HTTPStatus.LENGTH_REQUIRED, "send the image with a Content-Length, not chunked")
                return None
            values = {v.strip() for field in self.headers.get_all("Content-Length", []) for v in field.split(",")}
            if not values:
                self._refuse(HTTPStatus.LENGTH_REQUIRED, "send the image with a Content-Length")
                return None
            if len(values) > 1 or not re.fullmatch(r"[0-9]{1,20}", next(iter(values))):
                self._refuse(HTTPStatus.BAD_REQUEST, f"invalid Content-Length: {', '.join(sorted(values))[:100]}")
                return None
            length = int(values.pop())
            if length > MAX_BODY:
                self._refuse(HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                             f"image of {length} bytes is over the limit of {MAX_BODY}")
                return None
            return length

        def handle_expect_100(self):
            # Refuse a bad length before the client sends the body, not after.
            return (self.command != "POST" or self.path != "/predict" or self.body_length() is not None) \
                and super().handle_expect_100()

        def do_GET(self):
            if self.path in ("/", "/index.html"):
                self._send(HTTPStatus.OK, page, "text/html; charset=utf-8")
            else:
                self._json(HTTPStatus.NOT_FOUND, {"error": f"no such page: {self.path}"})

        def do_POST(self):
            if self.path != "/predict":
                self._refuse(HTTPStatus.NOT_FOUND, f"no such endpoint: {self.path}")
                return
            length = self.body_length()
            if length is None:
                return
            body = self.rfile.read(length)
            if len(body) < length:
                self.close_connection = True  # the client closed its side early: nobody to answer
                return
            try:
                with computing:
                    answer = prediction(model, body)
            except FastnetError as error:
                self._json(HTTPStatus.BAD_REQUEST, {"error": str(error)})
            else:
                self._json(HTTPStatus.OK, answer)

    return Handler


class LingeringCloser:
    """Closes refused connections without destroying the answer they were sent.

    Closing a socket whose request was not read makes the kernel send a reset,
    and a client still sending its body then fails with a broken pipe or a reset
    instead of reading the 503. So, like web servers' lingering close: stop
    writing, read and drop what the client still sends until it closes or LINGER
    seconds pass, then close. One thread drains them all; at most MAX_LINGERING
    at once, so a flood of refused clients costs no more than that.
    """

    def __init__(self):
        self.selector = selectors.DefaultSelector()
        self.lock = threading.Lock()
        self.deadlines: dict[socket.socket, float] = {}
        self.thread: threading.Thread | None = None
        self.stopping = False

    def close(self, sock: socket.socket) -> None:
        try:
            sock.shutdown(socket.SHUT_WR)
            sock.setblocking(False)
        except OSError:
            sock.close()
            return
        with self.lock:
            if self.stopping or len(self.deadlines) >= MAX_LINGERING:
                sock.close()
                return
            self.deadlines[sock] = time.monotonic() + LINGER
            self.selector.register(sock, selectors.EVENT_READ)
            if self.thread is None:
                self.thread = threading.Thread(target=self._drain, name="fastnet-linger", daemon=True)
                self.thread.start()

    def _drain(self) -> None:
        while not self.stopping:
            ready = self.selector.select(timeout=0.1)  # registering from another thread is safe with epoll/poll
            now = time.monotonic()
            with self.lock:
                done = {key.fileobj for key, _ in ready if key.fileobj in self.deadlines
                        and not self._still_sending(key.fileobj)}
                done.update(sock for sock, deadline in self.deadlines.items() if deadline < now)
                for sock in done:
                    self._forget(sock)

    @staticmethod
    def _still_sending(sock) -> bool:
        try:
            return bool(sock.recv(65536))
        except BlockingIOError:
            return True
        except OSError:
            return False

    def _forget(self, sock) -> None:
        del self.deadlines[sock]
        self.selector.unregister(sock)
        sock.close()

    def stop(self) -> None:
        with self.lock:
            self.stopping = True
            for sock in list(self.deadlines):
                self._forget(sock)


class Server(ThreadingHTTPServer):
    """ThreadingHTTPServer with at most max_connections open; the next ones get a quick 503."""

    daemon_threads = True
    block_on_close = False  # server_close() does not wait for open connections (a browser keeps one open)
    request_queue_size = 128  # the listen backlog: a burst of clients waits to be accepted, not reset

    def __init__(self, address, handler, max_connections: int):
        self.connections = threading.BoundedSemaphore(max_connections)
        self.closer = LingeringCloser()
        if ":" in address[0]:  # an IPv6 address such as ::1
            self.address_family = socket.AF_INET6
        super().__init__(address, handler)

    def process_request(self, request, client_address):
        if not self.connections.acquire(blocking=False):
            try:  # answered here, in the accepting thread: a fresh socket's buffer takes it without waiting
                request.setblocking(False)
                request.send(b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
                             b"Content-Length: %d\r\nRetry-After: 1\r\nConnection: close\r\n\r\n%s"
                             % (len(BUSY), BUSY))
            except OSError:
                pass
            self.closer.close(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:  # no thread started: its slot is free again
            self.connections.release()
            raise

    def server_close(self):
        super().server_close()
        self.closer.stop()

    def process_request_thread(self, request, client_address):
        try:
            super().process_request_thread(request, client_address)
        finally:
            self.connections.release()

    def handle_error(self, request, client_address):
        """One line, not a traceback: what escaped the handler (it answers everything it can)."""
        error = sys.exc_info()[1]
        _log(f"{client_address[0]}: {type(error).__name__}: {error}")


def make_server(model: TrainedModel, host: str = "127.0.0.1", port: int = 8000, *, timeout: float = 10.0,
                request_timeout: float = 30.0, max_connections: int = 64, workers: int | None = None) -> Server:
    """A server for `model`, not yet serving (call serve_forever). timeout: the longest wait on a socket
    (idle keep-alive too); request_timeout: the longest a request may take to arrive, from its first byte;
    max_connections: open at once; workers: images decoded and predicted at once (default: the cores, at most 4)."""
    model.predict_proba(np.zeros((1, model.prep().row_size), np.uint8))  # load the kernels before the first request
    if workers is None:
        workers = min(4, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)
    handler = make_handler(model, PAGE.encode(), timeout=timeout, request_timeout=request_timeout, workers=workers)
    return Server((host, port), handler, max_connections)


PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>fastnet: draw a digit</title>
<style>
body { font-family: system-ui, sans-serif; margin: 2rem; color: #222; }
main { display: flex; gap: 2rem; flex-wrap: wrap; align-items: flex-start; }
#pad { border: 2px solid #444; border-radius: 6px; touch-action: none; cursor: crosshair; background: #fff; }
.bar { display: flex; align-items: center; gap: .5rem; margin: .4rem 0; font-size: 1.3rem; }
.bar span:first-child { width: 3.5rem; font-weight: bold; }
.track { width: 220px; height: 22px; background: #eee; border-radius: 4px; overflow: hidden; }
.fill { height: 100%; background: #3a7bd5; }
#seen { image-rendering: pixelated; border: 1px solid #999; width: 112px; height: 112px; }
button, label.upload { font-size: 1rem; padding: .4rem .9rem; margin-right: .5rem; cursor: pointer; }
#error { color: #b00; min-height: 1.2em; }
</style></head>
<body>
<h1>Draw a digit</h1>
<main>
  <div>
    <canvas id="pad" width="280" height="280"></canvas>
    <p><button id="clear">Clear</button>
       <label class="upload">Upload an image <input id="upload" type="file" accept="image/*" hidden></label></p>
    <p id="error"></p>
  </div>
  <div>
    <h2>The network reads <span id="answer">-</span></h2>
    <div id="bars"></div>
    <h3>What it saw (<span id="size">its input</span>)</h3>
    <canvas id="seen" width="28" height="28"></canvas>
  </div>
</main>
<script>
const pad = document.getElementById("pad"), ink = pad.getContext("2d");
const seen = document.getElementById("seen").getContext("2d");
let drawing = false, last = null, pending = false, again = false;
function blank() { ink.fillStyle = "#fff"; ink.fillRect(0, 0, pad.width, pad.height); }
blank();
ink.lineCap = ink.lineJoin = "round"; ink.lineWidth = 18; ink.strokeStyle = "#000";
function point(e) { const r = pad.getBoundingClientRect(); return [e.clientX - r.left, e.clientY - r.top]; }
pad.addEventListener("pointerdown", e => { drawing = true; last = point(e); pad.setPointerCapture(e.pointerId);
  ink.beginPath(); ink.arc(last[0], last[1], ink.lineWidth / 2, 0, 2 * Math.PI); ink.fillStyle = "#000"; ink.fill(); });
pad.addEventListener("pointermove", e => { if (!drawing) return; const p = point(e);
  ink.beginPath(); ink.moveTo(last[0], last[1]); ink.lineTo(p[0], p[1]); ink.stroke(); last = p; ask(); });
for (const type of ["pointerup", "pointercancel"]) pad.addEventListener(type, () => { if (drawing) { drawing = false; ask(); } });
document.getElementById("clear").onclick = () => { blank(); show(null); };
document.getElementById("upload").onchange = e => { if (e.target.files[0]) send(e.target.files[0]); };
function ask() {  // at most one request in flight; the latest drawing is sent when it returns
  if (pending) { again = true; return; }
  pending = true; pad.toBlob(blob => send(blob), "image/png");
}
async function send(blob) {
  try {
    const response = await fetch("/predict", { method: "POST", body: blob });
    const answer = await response.json();
    if (!response.ok) throw new Error(answer.error);
    document.getElementById("error").textContent = ""; show(answer);
  } catch (error) { document.getElementById("error").textContent = error.message; }
  pending = false; if (again) { again = false; ask(); }
}
function show(answer) {
  const bars = document.getElementById("bars"); bars.innerHTML = "";
  document.getElementById("answer").textContent = answer ? answer.top[0].label : "-";
  seen.fillStyle = "#000"; seen.fillRect(0, 0, seen.canvas.width, seen.canvas.height);
  if (!answer) return;
  for (const t of answer.top) {
    const row = document.createElement("div"); row.className = "bar";  // class names as text, never as HTML
    row.innerHTML = `<span></span><div class="track"><div class="fill"></div></div><span></span>`;
    row.children[0].textContent = t.label;
    row.querySelector(".fill").style.width = `${(100 * t.probability).toFixed(1)}%`;
    row.children[2].textContent = `${(100 * t.probability).toFixed(1)}%`;
    bars.appendChild(row);
  }
  const s = answer.seen;
  seen.canvas.width = s.width; seen.canvas.height = s.height;
  document.getElementById("size").textContent = `${s.width}x${s.height}`;
  const image = seen.createImageData(s.width, s.height);
  for (let i = 0; i < s.width * s.height; i++) {
    const p = s.pixels.slice(i * s.channels, (i + 1) * s.channels);
    image.data.set(s.channels === 3 ? [p[0], p[1], p[2], 255] : [p[0], p[0], p[0], 255], 4 * i);
  }
  seen.putImageData(image, 0, 0);
}
</script>
</body></html>
"""
