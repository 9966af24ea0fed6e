"""HTTP app for sandpool's custom-container proxy tests (stdlib only).

Runs as the entrypoint of the `pyapp` test image and directly on the host in tests.
Listens on 0.0.0.0:$PORT (PORT=0 picks a free port) and prints `listening on PORT`
as its first stdout line. One stderr line per request unless QUIET=1.

Routes (see README.md, "Other scripts"): ANY /echo..., GET /bytes, POST /upload, GET /sse,
GET /ws (websocket echo), GET /slow, GET /reset, GET /exit, PUT|GET /file/NAME,
GET /healthz, GET /env, GET /whoami, GET /net, GET /alloc, GET /burn.
"""
import base64
import hashlib
import json
import os
import socket
import struct
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

kWsGuid = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
kWriteBytes = 64 * 1024
# One period of the /bytes pattern (byte i = i % 251), long enough to slice any 64 KiB write.
kPattern = bytes(range(251)) * (kWriteBytes // 251 + 2)


class BadRequest(Exception):
    pass


class Handler(BaseHTTPRequestHandler):
    disable_nagle_algorithm = True  # a head and a body in two writes must not wait for a delayed ACK
    protocol_version = "HTTP/1.1"
    server_version = "sandpool-testapp/1"

    # Every method goes through route(); http.server looks up do_<METHOD>.
    def __getattr__(self, name):
        if name.startswith("do_"):
            return self.route
        raise AttributeError(name)

    def log_message(self, fmt, *args):
        if os.environ.get("QUIET") != "1":
            sys.stderr.write("%s %s\n" % (self.address_string(), fmt % args))

    # --- request bodies ---------------------------------------------------------------

    def body_chunks(self):
        """Yields the request body in pieces, Content-Length or chunked, once."""
        if self.body_done:
            return
        self.body_done = True
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            yield from self.chunked_body()
            return
        try:
            left = int(self.headers.get("Content-Length", "0"))
        except ValueError:
            raise BadRequest("bad Content-Length")
        while left > 0:
            data = self.rfile.read(min(left, kWriteBytes))
            if not data:
                raise BadRequest("body ended early")
            left -= len(data)
            yield data

    def chunked_body(self):
        while True:
            line = self.rfile.readline(1024)
            if not line.endswith(b"\n"):
                raise BadRequest("bad chunk size line")
            try:
                size = int(line.split(b";", 1)[0].strip(), 16)
            except ValueError:
                raise BadRequest("bad chunk size")
            if size == 0:
                break
            while size > 0:
                data = self.rfile.read(min(size, kWriteBytes))
                if not data:
                    raise BadRequest("chunk ended early")
                size -= len(data)
                yield data
            if self.rfile.readline(3) not in (b"\r\n", b"\n"):
                raise BadRequest("chunk not followed by CRLF")
        while self.rfile.readline(8192) not in (b"\r\n", b"\n", b""):
            pass  # trailer fields, ignored

    def body_digest(self):
        h, n = hashlib.sha256(), 0
        for data in self.body_chunks():
            h.update(data)
            n += len(data)
        return n, h.hexdigest()

    def read_body(self):
        return b"".join(self.body_chunks())

    # --- answers ----------------------------------------------------------------------

    def answer(self, status, body, content_type="text/plain", close=False):
        if isinstance(body, str):
            body = body.encode()
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        if close:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def answer_json(self, status, obj):
        self.answer(status, json.dumps(obj) + "\n", "application/json")

    def start_chunked(self, content_type, close=False):
        self.send_response(200)
        self.send_header("Content-Type", content_type)
        self.send_header("Transfer-Encoding", "chunked")
        if close:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()

    def write_chunk(self, data):
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))

    def end_chunked(self):
        self.wfile.write(b"0\r\n\r\n")

    # --- routing ----------------------------------------------------------------------

    def route(self):
        self.body_done = False
        url = urlsplit(self.path)
        self.url_path = url.path
        self.query = {k: v[-1] for k, v in parse_qs(url.query).items()}
        method, path = self.command, url.path
        try:
            if path.startswith("/echo"):
                self.echo(url)
            elif path.startswith("/file/"):
                self.file(path[len("/file/"):])
            elif method == "POST" and path == "/upload":
                n, digest = self.body_digest()
                self.answer_json(200, {"len": n, "sha256": digest})
            elif method == "HEAD" and path == "/healthz":
                self.answer(200, "ok")  # answer() sends the head only
            elif method == "GET" and path in kGetRoutes:
                kGetRoutes[path](self)
            else:
                self.answer(404, "not found\n")
            if not self.close_connection:
                for _ in self.body_chunks():
                    pass  # an unread body would be taken for the next request
        except BadRequest as e:
            self.answer(400, "%s\n" % e, close=True)

    def int_arg(self, name, default):
        try:
            return int(self.query.get(name, default))
        except ValueError:
            raise BadRequest("%s is not an integer" % name)

    def echo(self, url):
        n, digest = self.body_digest()
        self.answer_json(200, {
            "method": self.command, "path": url.path, "query": url.query,
            "headers": [[k, v] for k, v in self.headers.items()],
            "body_len": n, "body_sha256": digest,
        })

    def bytes_(self):
        n = self.int_arg("n", 0)
        chunked = self.query.get("chunked") == "1"
        if chunked:
            self.start_chunked("application/octet-stream")
        else:
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(n))
            self.end_headers()
        time.sleep(self.int_arg("delay_ms", 0) / 1000)  # the head goes first, the body after this
        i = 0
        while i < n:
            size = min(kWriteBytes, n - i)
            data = kPattern[i % 251:i % 251 + size]
            if chunked:
                self.write_chunk(data)
            else:
                self.wfile.write(data)
            i += size
        if chunked:
            self.end_chunked()

    def sse(self):
        n, ms = self.int_arg("n", 3), self.int_arg("ms", 100)
        self.start_chunked("text/event-stream", close=True)
        for i in range(n):
            if i > 0:
                time.sleep(ms / 1000)
            self.write_chunk(b"data: %d\n\n" % i)
        self.end_chunked()

    def slow(self):
        time.sleep(self.int_arg("ms", 1000) / 1000)
        self.answer(200, "ok")

    def reset(self):
        # SO_LINGER 0 then close: the peer gets RST, not FIN. detach() so that the
        # server's own shutdown/close of this socket finds nothing left to do.
        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        os.close(self.connection.detach())
        self.close_connection = True

    def exit_(self):
        code = self.int_arg("code", 0)
        self.answer(200, "bye", close=True)
        threading.Timer(0.1, os._exit, [code]).start()

    def file(self, name):
        if not name or name in (".", "..") or "/" in name or "\0" in name:
            raise BadRequest("bad file name")
        path = os.path.join(os.getcwd(), "data", name)
        if self.command == "PUT":
            os.makedirs(os.path.dirname(path), exist_ok=True)
            n = 0
            with open(path, "wb") as f:
                for data in self.body_chunks():
                    f.write(data)
                    n += len(data)
            self.answer_json(201, {"len": n})
        elif self.command == "GET":
            try:
                with open(path, "rb") as f:
                    self.answer(200, f.read(), "application/octet-stream")
            except FileNotFoundError:
                self.answer(404, "no such file\n")
        else:
            self.answer(405, "PUT or GET\n")

    def healthz(self):
        self.answer(200, "ok")

    def env(self):
        self.answer_json(200, dict(os.environ))

    def whoami(self):
        self.answer_json(200, {"uid": os.getuid(), "gid": os.getgid(), "cwd": os.getcwd(),
                               "hostname": socket.gethostname()})

    def net(self):
        """The network as the app sees it: its interfaces, and the errno of a TCP connect to
        ?connect=HOST:PORT (0 when it connected)."""
        out = {"interfaces": sorted(name for _, name in socket.if_nameindex())}  # over NETLINK_ROUTE
        target = self.query.get("connect")
        if target:
            host, _, port = target.rpartition(":")
            try:
                with socket.create_connection((host, int(port)), timeout=2):
                    out["connect_errno"] = 0
            except OSError as e:
                out["connect_errno"] = e.errno if e.errno is not None else -1
            except ValueError:
                raise BadRequest("connect wants HOST:PORT")
        self.answer_json(200, out)

    def alloc(self):
        """Allocates and touches ?mb=N MiB, then answers: a memory limit below that kills the app."""
        n = self.int_arg("mb", 0)
        block = bytearray(n << 20)
        for i in range(0, len(block), 4096):
            block[i] = 1
        self.answer_json(200, {"allocated_mb": n})

    def burn(self):
        """Spins for ?ms=N of wall time; answers the CPU time that got (a CPU limit caps it)."""
        wall = self.int_arg("ms", 0) / 1000
        t0, c0 = time.monotonic(), time.process_time()
        while time.monotonic() - t0 < wall:
            pass
        self.answer_json(200, {"wall_s": time.monotonic() - t0, "cpu_s": time.process_time() - c0})

    def ws(self):
        key = self.headers.get("Sec-WebSocket-Key")
        if self.headers.get("Upgrade", "").lower() != "websocket" or not key:
            self.answer(400, "websocket upgrade expected\n")
            return
        accept = base64.b64encode(hashlib.sha1((key + kWsGuid).encode()).digest()).decode()
        self.send_response(101)
        self.send_header("Upgrade", "websocket")
        self.send_header("Connection", "Upgrade")
        self.send_header("Sec-WebSocket-Accept", accept)
        self.end_headers()
        self.close_connection = True
        websocket_echo(self.rfile, self.wfile)


kGetRoutes = {
    "/bytes": Handler.bytes_, "/sse": Handler.sse, "/ws": Handler.ws, "/slow": Handler.slow,
    "/reset": Handler.reset, "/exit": Handler.exit_, "/healthz": Handler.healthz,
    "/env": Handler.env, "/whoami": Handler.whoami, "/net": Handler.net, "/alloc": Handler.alloc,
    "/burn": Handler.burn,
}


# --- websocket (RFC 6455 §5) ------------------------------------------------------------

def read_exact(rfile, n):
    data = rfile.read(n)
    if len(data) != n:
        raise EOFError
    return data


def read_frame(rfile):
    """Returns (fin, opcode, payload) of one client frame; client frames must be masked."""
    b0, b1 = read_exact(rfile, 2)
    fin, opcode, masked, size = b0 >> 7, b0 & 0x0F, b1 >> 7, b1 & 0x7F
    if size == 126:
        size = struct.unpack("!H", read_exact(rfile, 2))[0]
    elif size == 127:
        size = struct.unpack("!Q", read_exact(rfile, 8))[0]
    if not masked:
        raise ValueError("unmasked client frame")
    mask = read_exact(rfile, 4)
    payload = bytearray(read_exact(rfile, size))
    for i in range(size):
        payload[i] ^= mask[i % 4]
    return fin, opcode, bytes(payload)


def write_frame(wfile, fin, opcode, payload):
    head = bytes([(fin << 7) | opcode])
    n = len(payload)
    if n < 126:
        head += bytes([n])
    elif n < 65536:
        head += bytes([126]) + struct.pack("!H", n)
    else:
        head += bytes([127]) + struct.pack("!Q", n)
    wfile.write(head + payload)


def websocket_echo(rfile, wfile):
    """Echoes text, binary and continuation frames; ping → pong; close → close."""
    while True:
        try:
            fin, opcode, payload = read_frame(rfile)
        except EOFError:
            return
        except ValueError:
            write_frame(wfile, 1, 0x8, struct.pack("!H", 1002))
            return
        if opcode in (0x0, 0x1, 0x2):
            write_frame(wfile, fin, opcode, payload)
        elif opcode == 0x9:
            write_frame(wfile, 1, 0xA, payload)
        elif opcode == 0x8:
            write_frame(wfile, 1, 0x8, payload[:2])
            return
        # 0xA (unsolicited pong) is ignored


def main():
    server = ThreadingHTTPServer(("0.0.0.0", int(os.environ.get("PORT", "8080"))), Handler)
    print("listening on %d" % server.server_address[1], flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
