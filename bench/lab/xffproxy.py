"""A tiny per-actor HTTP relay on 127.0.0.1 that names the actor's address to nginx.

Used for tools that cannot add a header themselves (nmap's NSE http library has no generic
header option).  The tool talks plain HTTP to this relay, which forwards each request, unchanged
apart from hop-by-hop headers, to nginx's PROXY-protocol port: a ``PROXY TCP4 <actor-ip> ...``
line opens each upstream connection, so nginx attributes even requests it rejects as malformed
(400, before realip could read a header) to the actor.  It also enforces a request cap.

**Rotating mode** (``rotation=[(ip, units), ...]``): the relay plays a rotating-proxy service, so
ONE tool run reaches nginx as many clients.  Every request opens its own upstream connection
(``Connection: close``) with its own PROXY line, so a tool's keep-alive connection never pins an
address: the address is chosen per request.  The first ``units`` of the schedule go out as the
first address, the next ones as the second, and so on.  A unit is one request, or, with
``unit_start`` (a regex on ``"METHOD target"``), a run of requests that begins with a matching one
(hydra's login attempt is ``GET /login`` + ``POST /login``: both leave from the same address).
Once the schedule is used up the relay answers 503 itself (nginx never sees those requests).
A tool may use the relay as its HTTP proxy (``GET http://www.larkspur-tools.example/x``, the way
rotating-proxy services are used): the relay turns the absolute target into ``/x`` and still
forwards to nginx on 127.0.0.1, so the site's host name appears in Host and Referer headers
without ever being resolved.  Redirects that name nginx's port are rewritten (to the relay's
port, or to no port for a proxy client), so a crawler stays on the relay.
"""

from __future__ import annotations

import http.client
import ipaddress
import re
import socket
import socketserver
import threading
import time
from bisect import bisect_right
from collections import Counter
from itertools import accumulate

_ABSOLUTE = re.compile(r"^https?://[^/]*", re.IGNORECASE)
_HOP = {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "te", "upgrade",
        "x-forwarded-for"}


class XffProxy:
    def __init__(self, upstream_port: int, client_ip: str, max_requests: int, delay: float = 0.0,
                 rotation: list[tuple[str, int]] | None = None, unit_start: str | None = None) -> None:
        self.upstream_port, self.client_ip, self.max_requests = upstream_port, client_ip, max_requests
        self.delay = delay  # real seconds to hold each request: throttles a tool that has no delay option
        self.count = 0
        self._lock = threading.Lock()
        # Rotating mode: address i serves units [bounds[i-1], bounds[i]); the schedule caps the run.
        self.rotation = list(rotation or [])
        self._bounds = list(accumulate(n for _, n in self.rotation))
        self._unit_start = re.compile(unit_start) if unit_start else None
        self.units = 0                      # units started so far
        self.sent: Counter[str] = Counter()  # requests forwarded per announced address
        if self.rotation:
            self.max_requests = 10**9  # the schedule is the cap
        outer = self

        class Handler(socketserver.StreamRequestHandler):
            timeout = 60

            def handle(self) -> None:
                while outer._one(self.rfile, self.connection):
                    pass

        class Server(socketserver.ThreadingTCPServer):
            daemon_threads = True
            allow_reuse_address = True

            def handle_error(self, request: object, client_address: object) -> None:
                pass  # a scanner hanging up mid-request is normal, not worth a traceback

        # nmap's http NSE scripts only run on ports it believes are HTTP (80, 8080, ...), and the
        # lab does not use -sV (its non-HTTP probes would be noise), so prefer a well-known port.
        for port in (0,) if self.rotation else (8080, 8000, 8088, 8180, 7080, 0):
            try:
                self.server = Server(("127.0.0.1", port), Handler)
                break
            except OSError:
                continue
        self.port = int(self.server.server_address[1])
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def start(self) -> XffProxy:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def _one(self, rfile: object, sock: socket.socket) -> bool:
        """Relay one request; return False when the client connection should close."""
        line = rfile.readline(65537)  # type: ignore[attr-defined]
        if not line or not line.strip():
            return False
        try:
            method, target, version = line.decode("latin-1").split()
        except ValueError:
            return False
        absolute = _ABSOLUTE.match(target)
        if absolute:  # proxy-style request: forward in origin form, like any HTTP proxy
            target = target[absolute.end():] or "/"
        headers: list[tuple[str, str]] = []
        while True:
            h = rfile.readline(65537)  # type: ignore[attr-defined]
            if h in (b"\r\n", b"\n", b""):
                break
            k, _, v = h.decode("latin-1").partition(":")
            headers.append((k.strip(), v.strip()))
        lower = {k.lower(): v for k, v in headers}
        body = rfile.read(int(lower.get("content-length", "0") or 0)) if "content-length" in lower else b""
        with self._lock:
            self.count += 1
            over = self.count > self.max_requests
            client_ip = self.client_ip
            if self.rotation:
                starts = self._unit_start is None or self._unit_start.match(f"{method} {target}")
                if starts or self.units == 0:
                    self.units += 1
                idx = bisect_right(self._bounds, self.units - 1)
                over = idx >= len(self.rotation)
                if not over:
                    client_ip = self.rotation[idx][0]
                    self.sent[client_ip] += 1
        if self.delay and not over:
            time.sleep(self.delay)
        if over:  # cap reached: answer locally, nginx never sees it
            sock.sendall(b"HTTP/1.1 503 Lab Cap\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            return False
        conn = http.client.HTTPConnection("127.0.0.1", self.upstream_port, timeout=60)
        try:
            conn.connect()
            fam = "TCP6" if ipaddress.ip_address(client_ip).version == 6 else "TCP4"
            dst = "::1" if fam == "TCP6" else "127.0.0.1"
            sport = 1024 + (self.count * 7919) % 60000  # a plausible ephemeral source port
            assert conn.sock is not None
            conn.sock.sendall(f"PROXY {fam} {client_ip} {dst} {sport} 80\r\n".encode())
            if self.rotation and version == "HTTP/1.0":  # log the tool's own protocol version
                conn._http_vsn, conn._http_vsn_str = 10, "HTTP/1.0"  # type: ignore[attr-defined]
            conn.putrequest(method, target, skip_host=True, skip_accept_encoding=True)
            for k, v in headers:
                if k.lower() not in _HOP:
                    conn.putheader(k, v)
            conn.putheader("X-Forwarded-For", client_ip)
            if self.rotation:  # one upstream connection per request, whatever the tool does
                conn.putheader("Connection", "close")
            if body:
                conn.endheaders(body)
            else:
                conn.endheaders()
            resp = conn.getresponse()
            data = resp.read()
        except (OSError, http.client.HTTPException):
            sock.sendall(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            return False
        finally:
            conn.close()
        out = [f"HTTP/1.1 {resp.status} {resp.reason}\r\n"]
        hdrs = [(k, v) for k, v in resp.getheaders() if k.lower() not in _HOP | {"content-length"}]
        if self.rotation:  # nginx's absolute redirects name its own (PROXY-protocol) port
            port_re = re.compile(rf"^(https?://[^/]+?):{self.upstream_port}(?=/|$)")
            sub = r"\1" if absolute else rf"\1:{self.port}"
            hdrs = [(k, port_re.sub(sub, v) if k.lower() == "location" else v) for k, v in hdrs]
        out += [f"{k}: {v}\r\n" for k, v in hdrs]
        out.append(f"Content-Length: {len(data)}\r\n")
        keep = version == "HTTP/1.1" and lower.get("connection", "").lower() != "close"
        out.append("Connection: keep-alive\r\n\r\n" if keep else "Connection: close\r\n\r\n")
        sock.sendall("".join(out).encode("latin-1") + (b"" if method == "HEAD" else data))
        return keep
