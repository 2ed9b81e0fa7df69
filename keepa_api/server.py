"""The embedded Keepa server: :class:`~keepa_api.service.KeepaService` over real HTTP.

In Python::

    with FakeKeepa(refill_per_minute=5, seed=1) as keepa:     # or keepa.start() ... keepa.stop()
        client = KeepaClient("any-key", base_url=keepa.base_url)

From a shell: ``keepa-deals fake-keepa --port 0`` prints its base URL as the first line of stdout.

Endpoints: Keepa's ``/deal``, ``/product``, ``/token`` (GET, or POST with a form body), and
``/_admin/faults`` (GET shows, POST with a JSON object changes the switches of
:class:`~keepa_api.service.Faults`) and ``/_admin/books`` (the bucket's books). Keys in
``bad_keys`` (default: empty and ``"bad"``) get HTTP 402; any other key is accepted. Request lines
are logged without their query string, so keys never reach a log.
"""

from __future__ import annotations

import json
import logging
import signal
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qsl, urlsplit

from keepa_api.service import BadRequest, KeepaService

log = logging.getLogger(__name__)
MAX_BODY_BYTES = 1 << 20


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"           # keep-alive, so clients reuse connections
    server_version = "FakeKeepa/1"
    disable_nagle_algorithm = True           # else Nagle + delayed ACK stall every response ~40 ms
    service: KeepaService                    # set on a subclass per server

    def log_message(self, format, *args):    # noqa: A002 - the stdlib's signature
        pass                                 # the default prints the request line, key included

    def _send(self, status: int, body: bytes, delay_s: float = 0.0) -> None:
        if delay_s > 0:
            time.sleep(delay_s)              # the "slow responses" fault
        self.send_response(status)
        self.send_header("Content-Type", "application/json;charset=UTF-8")
        self.send_header("Content-Length", str(len(body)))
        self._headers_buffer.append(b"\r\n" + body)    # headers and body in one send
        self.flush_headers()
        log.debug("%s %s -> %s", self.command, urlsplit(self.path).path, status)

    def _read_body(self) -> bytes:
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = 0
        return self.rfile.read(min(max(length, 0), MAX_BODY_BYTES)) if length else b""

    def _dispatch(self, body: bytes = b"") -> None:
        parts = urlsplit(self.path)
        try:
            if parts.path.startswith("/_admin/"):
                self._admin(parts.path, body)
                return
            params = dict(parse_qsl(parts.query, keep_blank_values=True))
            if body:
                params.update(parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True))
            self._send(*self.service.handle(parts.path, params))
        except (BrokenPipeError, ConnectionResetError):
            raise
        except Exception:                    # a bug must not take the server down; say so loudly
            log.exception("fake Keepa failed on %s %s", self.command, parts.path)
            self._send(500, b'{"error":{"type":"INTERNAL_ERROR","message":"fake server bug","details":""}}')

    def _admin(self, path: str, body: bytes) -> None:
        if path == "/_admin/books":
            self._send(200, json.dumps(self.service.books()).encode())
        elif path == "/_admin/faults":
            try:
                if self.command == "POST":
                    changes = json.loads(body or b"{}")
                    if not isinstance(changes, dict):
                        raise BadRequest("send a JSON object of fault switches")
                    with self.service.lock:
                        self.service.faults.update(changes)
            except (ValueError, BadRequest) as exc:
                error = {"error": {"type": "REQUEST_REJECTED", "message": str(exc)[:200], "details": ""}}
                self._send(400, json.dumps(error).encode())
                return
            self._send(200, json.dumps({"faults": self.service.books()["faults"]}).encode())
        else:
            self._send(404, b'{"error":{"type":"NOT_FOUND","message":"no such admin endpoint","details":""}}')

    def do_GET(self) -> None:  # noqa: N802 - the stdlib's naming
        self._dispatch()

    def do_POST(self) -> None:  # noqa: N802
        self._dispatch(self._read_body())

    def _not_allowed(self) -> None:
        self._read_body()
        self._send(405, b'{"error":{"type":"METHOD_NOT_ALLOWED","message":"use GET or POST","details":""}}')

    do_PUT = do_DELETE = do_PATCH = _not_allowed


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def handle_error(self, request, client_address) -> None:
        exc = sys.exc_info()[1]
        if isinstance(exc, (BrokenPipeError, ConnectionResetError)):   # the client gave up (timeout)
            log.debug("client %s went away: %s", client_address[0], type(exc).__name__)
        else:
            log.error("fake Keepa connection error", exc_info=exc)


class FakeKeepa:
    """Start/stop the embedded Keepa server in-process. Keyword arguments go to KeepaService."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, **service_options):
        self.host, self.port = host, port
        self.service = KeepaService(**service_options)
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        if self._server is None:
            raise RuntimeError("the fake Keepa server is not running; call start() first")
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> str:
        handler = type("Handler", (_Handler,), {"service": self.service})
        self._server = _Server((self.host, self.port), handler)
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="fake-keepa", daemon=True)
        self._thread.start()
        log.info("fake Keepa serving on %s", self.base_url)
        return self.base_url

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._thread.join(timeout=5)
            self._server = self._thread = None

    def set_faults(self, **changes) -> None:
        with self.service.lock:
            self.service.faults.update(changes)

    def books(self) -> dict:
        return self.service.books()

    def __enter__(self) -> FakeKeepa:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def serve_from_cli(args) -> int:
    """``keepa-deals fake-keepa``: serve until SIGINT/SIGTERM; the base URL is stdout's first line."""
    keepa = FakeKeepa(args.host, args.port, refill_per_minute=args.refill_per_minute,
                      max_tokens=args.max_tokens, start_tokens=args.start_tokens,
                      minute_seconds=args.minute_seconds, seed=args.seed)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    print(keepa.start(), flush=True)
    try:
        while not stop.wait(0.5):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        keepa.stop()
    sys.stdout.flush()
    return 0
