"""In-process timings of the pieces of one sandpool agent cell (no second process, no
socket wake-ups): what the agent itself adds to a round trip. Run with Debian's python:
  /usr/bin/python3 bench/agent/agent_pieces.py [--preload]
"""
import io
import os
import socket
import sys
import tempfile
import timeit

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "src", "agent", "python"))
import sandpool_agent as A  # noqa: E402

if "--preload" in sys.argv:
    os.environ["MPLBACKEND"] = "Agg"
    import numpy, pandas, matplotlib.pyplot  # noqa: F401,E401

host, agent_end = socket.socketpair()
out, err = os.memfd_create("o"), os.memfd_create("e")
w = A.Worker(agent_end, tempfile.mkdtemp(), None, -1, out, err, os.dup(2))
w.stdout, w.stderr = A.capture_stream(out), A.capture_stream(err)
report = sys.__stderr__
sys.stdout = w.stdout
fd = agent_end.fileno()
cases = [
    ("run_python('print(1)')", "w.run_python('print(1)')"),
    ("run_python('1')", "w.run_python('1')"),
    ("figure_result()", "A.figure_result()"),
    ("O_ASYNC on + off", "A.fcntl.fcntl(fd, A.fcntl.F_SETFL, w.sock_flags | os.O_ASYNC); "
                         "A.fcntl.fcntl(fd, A.fcntl.F_SETFL, w.sock_flags)"),
    ("pre-cell poll(0)", "w.poller.poll(0)"),
    ("take_output x2", "w.take_output(out, 4096); w.take_output(err, 4096)"),
    ("encode_reply", "A.encode_reply(1, 0, 0, 0, 5, b'1\\n', b'', 'null')"),
    ("flush streams + fflush", "w.stdout.flush(); w.stderr.flush(); w.fflush(None)"),
    ("whole execute() incl. send", "w.execute(1, payload); host.recv(65536)"),
]
code = b"print(1)"
payload = A.EXEC_FIXED.pack(0, 60000, 4096, len(code)) + code + b"\0\0\0\0" + b"\0\0\0\0"
n = 20000
for name, stmt in cases:
    us = timeit.timeit(stmt, number=n, globals=globals()) / n * 1e6
    print(f"{name:28s} {us:7.2f} us", file=report)
