"""Test-side client of the sandpool agent: starts it on a socketpair (Debian's python)
and speaks the protocol with the agent module's own encoders; for tests only."""

import os
import socket
import struct
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
AGENT = os.path.join(HERE, "..", "..", "..", "src", "agent", "python", "sandpool_agent.py")
sys.path.insert(0, os.path.dirname(AGENT))
import sandpool_agent as A  # noqa: E402

PYTHON = "/usr/bin/python3"


def b(v):
    return struct.pack("<I", len(v)) + v


class Reply:
    def __init__(self, ftype, rid, payload):
        self.type, self.id, self.payload = ftype, rid, payload
        r = A.Reader(payload)
        if ftype == A.T_EXEC_REPLY:
            self.status, self.flags = r.u8(), r.u8()
            self.exit_code = struct.unpack("<i", r.take(4))[0]
            self.exec_us = r.u64()
            self.stdout, self.stderr = r.bytes(), r.bytes()
            self.result = r.bytes().decode()
            r.done()
        elif ftype == A.T_ERROR:
            self.errno = struct.unpack("<i", r.take(4))[0]
            self.message = r.bytes().decode()
        elif ftype == A.T_OK:
            self.value = r.u64()
        elif ftype in (A.T_LIST_REPLY, A.T_STAT_REPLY):
            self.entries = []
            for _ in range(r.u32()):
                name = r.bytes()
                t, size, mtime = struct.unpack("<BQq", r.take(17))
                self.entries.append((name.decode(), t, size))
            self.truncated = r.u8()
        elif ftype == A.T_FILE_DATA:
            self.size, self.mtime, self.eof = struct.unpack("<QqB", r.take(17))
            self.data = r.bytes()
        elif ftype == A.T_HELLO:
            self.version = r.bytes()
            self.pid = r.u32()
            self.python = r.bytes().decode()
            self.caps, self.restarts, self.reason = struct.unpack("<IIB", r.take(9))


class Agent:
    def __init__(self, root, grace_ms=500, preload=""):
        host, child = socket.socketpair()
        self.sock = host
        args = [PYTHON, AGENT, "--fd", str(child.fileno()), "--root", root,
                "--grace-ms", str(grace_ms)]
        if preload:
            args += ["--preload", preload]
        self.proc = subprocess.Popen(args, pass_fds=[child.fileno()])
        child.close()
        self.buf = b""
        self.next_id = 0
        self.hellos = []
        self.hellos.append(self.read())

    def close(self):
        self.sock.close()
        try:
            return self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()

    def read(self, timeout=30):
        self.sock.settimeout(timeout)
        while True:
            if len(self.buf) >= A.HEADER.size:
                magic, n, ver, ftype, flags, rid = A.HEADER.unpack_from(self.buf)
                assert magic == A.MAGIC and ver == 1
                if len(self.buf) >= A.HEADER.size + n:
                    payload = self.buf[A.HEADER.size:A.HEADER.size + n]
                    self.buf = self.buf[A.HEADER.size + n:]
                    return Reply(ftype, rid, payload)
            data = self.sock.recv(1 << 20)
            if not data:
                raise EOFError("agent closed the connection")
            self.buf += data

    def send(self, ftype, payload=b"", flags=0):
        self.next_id += 1
        self.sock.sendall(A.HEADER.pack(A.MAGIC, len(payload), A.PROTOCOL_VERSION, ftype, flags,
                                        self.next_id) + payload)
        return self.next_id

    def wait(self, rid, timeout=30):
        while True:
            r = self.read(timeout)
            if r.type == A.T_HELLO:
                self.hellos.append(r)
                continue
            if r.id == rid:
                return r

    def call(self, ftype, payload=b"", timeout=30):
        return self.wait(self.send(ftype, payload), timeout)

    def execute(self, code, timeout_ms=10000, limit=65536, shell=False, argv=(), stdin=b"",
                wait=True, warm_up=False):
        if isinstance(code, str):
            code = code.encode()
        p = struct.pack("<BII", 1 if shell else 0, timeout_ms, limit) + b(code) + \
            struct.pack("<I", len(argv)) + b"".join(b(a.encode()) for a in argv) + b(stdin)
        rid = self.send(A.T_EXEC, p, A.F_WARM_UP if warm_up else 0)
        return self.wait(rid, timeout=timeout_ms / 1000 + 30) if wait else rid

    def path_op(self, ftype, path, recursive=0):
        if isinstance(path, str):
            path = path.encode()
        return self.call(ftype, b(path) + bytes([recursive]))

    def read_file(self, path, offset=0, max_bytes=A.CHUNK):
        return self.call(A.T_READ, b(path.encode()) + struct.pack("<QI", offset, max_bytes))

    def upload(self, path, chunks, parents=1):
        """Streams chunks; returns the final reply (Ok or Error)."""
        if isinstance(path, str):
            path = path.encode()
        r = self.call(A.T_WRITE_OPEN, b(path) + bytes([parents]))
        if r.type != A.T_OK:
            return r
        up = r.value
        for c in chunks:
            r = self.call(A.T_WRITE_CHUNK, struct.pack("<Q", up) + b(c))
            if r.type != A.T_OK:
                return r
        return self.call(A.T_WRITE_CLOSE, struct.pack("<Q", up))
