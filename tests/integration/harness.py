"""Starts a real `sandpool serve` on port 0 and speaks raw HTTP to it; shared by the integration tests."""
import os
import re
import signal
import socket
import subprocess
import tempfile
import time

BINARY = os.environ.get("SANDPOOL_BIN", "")


def sandboxes_work():
    """(True, "") when `sandpool sandbox-run -- /bin/true` works here, else (False, why)."""
    try:
        p = subprocess.run([BINARY, "sandbox-run", "--", "/bin/true"], capture_output=True, timeout=60)
    except OSError as e:
        return False, str(e)
    return p.returncode == 0, p.stderr.decode(errors="replace").strip()


class Server:
    """One sandpool process. Use as a context manager; stop() returns the exit code."""

    def __init__(self, *flags, binary=None, pools=False, preexec_fn=None):
        self.binary = binary or BINARY
        self.preexec_fn = preexec_fn  # run in the server's process before exec (e.g. setrlimit)
        if not pools:
            flags = ("--no-default-pool",) + flags
        self.dir = tempfile.TemporaryDirectory(prefix="sp-it-")
        self.port_file = os.path.join(self.dir.name, "port")
        self.stderr_path = os.path.join(self.dir.name, "stderr")
        self.flags = list(flags)
        self.proc = None
        self.port = None

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc):
        self.stop()
        self.proc.stdout.close()
        self.dir.cleanup()

    def start(self):
        args = [self.binary, "serve", "--listen", "127.0.0.1:0", "--port-file", self.port_file] + self.flags
        self.stderr = open(self.stderr_path, "wb")
        self.proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=self.stderr, preexec_fn=self.preexec_fn)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if os.path.exists(self.port_file):
                with open(self.port_file) as f:
                    text = f.read().strip()
                if text:
                    self.port = int(text)
                    return
            if self.proc.poll() is not None:
                raise RuntimeError("server exited: " + self.log())
            time.sleep(0.01)
        raise RuntimeError("server did not start: " + self.log())

    def log(self):
        with open(self.stderr_path, "rb") as f:
            return f.read().decode(errors="replace")

    def signal(self, sig=signal.SIGTERM):
        self.proc.send_signal(sig)

    def stop(self, timeout=30):
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            rc = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            rc = self.proc.wait()
        self.stderr.close()
        return rc

    def sanitized(self):
        """Whether the server runs with AddressSanitizer (tools/test.sh's asan build): its allocator
        keeps freed memory in quarantine, so memory bounds do not hold there."""
        with open("/proc/%d/maps" % self.proc.pid) as f:
            return any("libasan" in line for line in f)

    def connect(self, timeout=30):  # a crash probe under heavy load took over 10 s
        s = socket.create_connection(("127.0.0.1", self.port), timeout=timeout)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return Conn(s)

    def json(self, method, target, obj=None, headers=None):
        """One request with a JSON body (or none); returns (Response, parsed JSON or None)."""
        import json as _json
        body = b"" if obj is None else _json.dumps(obj).encode()
        hdrs = {"Content-Type": "application/json"} if obj is not None else {}
        hdrs.update(headers or {})
        r = self.request(method, target, body, hdrs)
        try:
            parsed = _json.loads(r.body) if r.body else None
        except ValueError:
            parsed = None
        return r, parsed

    def request(self, method, target, body=b"", headers=None):
        c = self.connect()
        try:
            hdrs = {"Host": "x", "Connection": "close"}
            hdrs.update(headers or {})
            return c.send_request(method, target, body, hdrs).read_response(head=(method == "HEAD"))
        finally:
            c.close()


class Response:
    def __init__(self, status, reason, headers, body):
        self.status, self.reason, self.headers, self.body = status, reason, headers, body

    def header(self, name):
        for k, v in self.headers:
            if k.lower() == name.lower():
                return v
        return None

    def __repr__(self):
        return "Response(%d %s, %r, %r)" % (self.status, self.reason, self.headers, self.body[:200])


class Conn:
    """A raw client connection with a byte buffer; reads responses one at a time."""

    def __init__(self, sock):
        self.sock = sock
        self.buf = bytearray()

    def close(self):
        self.sock.close()

    def send(self, data):
        self.sock.sendall(data)
        return self

    def send_request(self, method, target, body=b"", headers=None):
        lines = ["%s %s HTTP/1.1" % (method, target)]
        hdrs = {"Host": "x"}
        hdrs.update(headers or {})
        if body and "Transfer-Encoding" not in hdrs and "Content-Length" not in hdrs:
            hdrs["Content-Length"] = str(len(body))
        lines += ["%s: %s" % kv for kv in hdrs.items()]
        return self.send(("\r\n".join(lines) + "\r\n\r\n").encode() + body)

    def _fill(self, want=65536):
        data = self.sock.recv(max(65536, min(want, 16 << 20)))
        if not data:
            raise EOFError("connection closed by the server")
        self.buf += data

    def read_until(self, marker):
        while marker not in self.buf:
            self._fill()
        i = self.buf.index(marker) + len(marker)
        out = bytes(self.buf[:i])
        del self.buf[:i]
        return out

    def read_exact(self, n):
        while len(self.buf) < n:
            self._fill(n - len(self.buf))
        out = bytes(self.buf[:n])
        del self.buf[:n]
        return out

    def read_response(self, head=False):
        raw = self.read_until(b"\r\n\r\n").decode("latin-1")
        lines = raw.split("\r\n")
        m = re.match(r"HTTP/1\.1 (\d{3}) (.*)", lines[0])
        if not m:
            raise AssertionError("bad status line %r" % lines[0])
        headers = []
        for line in lines[1:]:
            if line:
                k, _, v = line.partition(":")
                headers.append((k, v.strip()))
        status = int(m.group(1))
        r = Response(status, m.group(2), headers, b"")
        length = r.header("Content-Length")
        if not head and length is not None:
            r.body = self.read_exact(int(length))
        return r

    def closed_by_peer(self, timeout=5):
        """True when the server closes the connection (EOF or reset) within `timeout` seconds."""
        self.sock.settimeout(timeout)
        try:
            while True:
                data = self.sock.recv(65536)
                if not data:
                    return True
                self.buf += data
        except (ConnectionResetError, BrokenPipeError):
            return True
        except socket.timeout:
            return False


class ServerTestCase:
    """Mixin for unittest classes sharing one server: set SERVER_FLAGS and POOLS on the class."""
    SERVER_FLAGS = ()
    POOLS = False

    @classmethod
    def setUpClass(cls):
        cls.srv = Server(*cls.SERVER_FLAGS, pools=cls.POOLS)
        cls.srv.start()

    @classmethod
    def tearDownClass(cls):
        rc = cls.srv.stop()
        cls.srv.proc.stdout.close()
        cls.srv.dir.cleanup()
        assert rc == 0, cls.srv.log()
