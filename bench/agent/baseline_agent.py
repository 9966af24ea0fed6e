"""Baseline for agent_rtt: the least a Python agent can do per cell on the same wire
format (exec with sys.stdout swapped to a StringIO, no fd capture, no timeouts, no
result value). Not a product: it only separates protocol+scheduling cost from the
real agent's per-cell work. Usage: baseline_agent.py --fd N [--root DIR]."""

import io
import os
import socket
import struct
import sys

HEADER = struct.Struct("<IIBBHQ")
MAGIC = 0x31505053


def main():
    fd = int(sys.argv[sys.argv.index("--fd") + 1])
    if "--root" in sys.argv:
        os.chdir(sys.argv[sys.argv.index("--root") + 1])
    sock = socket.socket(fileno=fd)
    hello = (struct.pack("<I", 8) + b"baseline" + struct.pack("<I", os.getpid()) +
             struct.pack("<I", 6) + b"3.11.2" + struct.pack("<IIB", 0, 0, 0))
    sock.sendall(HEADER.pack(MAGIC, len(hello), 1, 1, 0, 0) + hello)
    g = {"__name__": "__main__"}
    buf = b""
    real = sys.stdout
    while True:
        while len(buf) < HEADER.size or len(buf) < HEADER.size + HEADER.unpack_from(buf)[1]:
            data = sock.recv(1 << 20)
            if not data:
                return 0
            buf += data
        _, n, _, ftype, _, rid = HEADER.unpack_from(buf)
        payload, buf = buf[HEADER.size:HEADER.size + n], buf[HEADER.size + n:]
        clen = struct.unpack_from("<I", payload, 9)[0]
        code = payload[13:13 + clen].decode()
        out = io.StringIO()
        sys.stdout = out
        try:
            exec(code, g)
            status = 0
        except BaseException:
            status = 1
        sys.stdout = real
        o = out.getvalue().encode()
        body = (struct.pack("<BBiQI", status, 0, 0, 0, len(o)) + o + struct.pack("<I", 0) +
                struct.pack("<I", 2) + b'""')
        sock.sendall(HEADER.pack(MAGIC, len(body), 1, 5, 0, rid) + body)


if __name__ == "__main__":
    sys.exit(main())
