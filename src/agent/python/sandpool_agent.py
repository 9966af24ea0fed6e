"""sandpool agent: runs code cells and file operations inside one sandbox, speaking the
agent protocol (src/agent/PROTOCOL.md) on one connected socket; not a sandbox itself.

Process shape (see PROTOCOL.md "Restart contract"):
  supervisor (serve() calls into C and stays there)  --fork-->  worker (Python, Worker.serve())
The worker owns the socket while alive: it reads requests and writes replies. The
supervisor (src/agent/supervisor.cc, in libsandpool_clone.so) enforces execution deadlines
(SIGINT at the deadline, SIGKILL after the grace period), and when the worker dies it answers
the in-flight request itself (Timeout / OutOfMemory / Crashed, variables lost), then forks a
fresh worker, which sends a Hello. In a sandbox the supervisor is pid 1 of the session's pid
namespace; it reaps every child (a subreaper outside one).

Runs on Debian's /usr/bin/python3 (3.11), stdlib only; numpy/matplotlib are optional.
Deliberately one file (longer than our usual ~600-line split): it is copied beside the
binary and into sandboxes, and imported by src/sandbox/template.py under `python3 -I`,
where sibling modules would not be on sys.path. Sections, in order: wire encoding,
results (API.md §3), process helpers (VmBatch: the micro-VM's batched calls), file names
(API.md §4), Worker (socket I/O,
supervisor handshake, capture, execution, file operations, main loop), worker start-up,
serve()/main().
"""

import ast
import base64
import builtins
import collections
import ctypes
import errno
import fcntl
import io
import json
import linecache
import math
import mmap
import os
import random
import select
import shutil
import signal
import socket
import stat
import struct
import subprocess
import sys
import time
import traceback
import types

try:  # signal.getsignal() converts to an enum on every call: ~3 us a cell
    from _signal import getsignal as _getsignal
except ImportError:
    _getsignal = signal.getsignal
SIGINT = int(signal.SIGINT)
_BUILTIN_PRINT = builtins.print

AGENT_VERSION = "0.1.0"
PROTOCOL_VERSION = 1
MAGIC = 0x31505053
HEADER = struct.Struct("<IIBBHQ")  # magic, payload bytes, version, type, flags, request id
MAX_PAYLOAD = 8 << 20
CHUNK = 256 << 10
# Caps that keep every reply inside one frame: 2 streams + result + image < MAX_PAYLOAD.
MAX_OUTPUT_BYTES = 1 << 20       # per stream, whatever limit the host asks for
MAX_RESULT_CHARS = 256 << 10     # a str or repr() result; JSON escaping at most 6x
MAX_IMAGE_JSON_BYTES = 5 << 20

(T_HELLO, T_PING, T_PONG, T_EXEC, T_EXEC_REPLY, T_INTERRUPT, T_LIST, T_LIST_REPLY,
 T_STAT, T_STAT_REPLY, T_READ, T_FILE_DATA, T_WRITE_OPEN, T_WRITE_CHUNK, T_WRITE_CLOSE,
 T_WRITE_ABORT, T_OK, T_DELETE, T_ERROR, T_RESEED) = range(1, 21)
# Header flag of the one execute the host sends before the sandbox serves a session (PROTOCOL.md):
# it runs like any cell, and the agent keeps nothing from it that a session's cell could reuse.
F_WARM_UP = 1

S_SUCCESS, S_FAILURE, S_TIMEOUT, S_OOM, S_CRASHED, S_INTERRUPTED = range(6)
F_STDOUT_TRUNC, F_STDERR_TRUNC, F_VARS_LOST, F_RESULT_TRUNC = 1, 2, 4, 8
R_INITIAL, R_TIMEOUT, R_CRASHED, R_OOM = range(4)
CAP_NUMPY, CAP_MATPLOTLIB, CAP_SHELL, CAP_INTERRUPT = 1, 2, 4, 8

EXIT_EOF = 0        # host closed the connection: the session is over
EXIT_PROTOCOL = 3   # host broke the protocol: the stream is dead, do not restart
EXIT_GAVE_UP = 4    # supervisor: 5 workers in a row died before running a cell

UPLOAD_PREFIX = b".sandpool-upload-"
MAX_UPLOADS = 16
DEFAULT_TIMEOUT_MS = 120_000  # an execute request with timeout_ms = 0
DEFAULT_GRACE_MS = 2000  # how long a timed-out cell may take to stop before its worker is killed
MAX_CELL_SOURCES = 2048  # cells whose source tracebacks can still show

RUN_IDLE, RUN_CELL, RUN_REPLYING = 0, 1, 2  # the "running" field of the shared page

# Page shared by supervisor and worker. The worker writes, at offset 0: seq, running,
# request id, deadline ns, start ns (CLOCK_MONOTONIC), and at offset 48: the output
# limit and where this cell's stdout/stderr begin in the capture files; the supervisor
# writes the time it will next wake up ("armed until") at offset 40.
SHARED = struct.Struct("<QQQqqqQQQ")
WORKER_PART = struct.Struct("<QQQqq")
ARMED_OFFSET = 40
OUTPUT_PART = struct.Struct("<QQQ")
OUTPUT_OFFSET = 48
CAPTURE_RESET_BYTES = 1 << 20  # capture files are emptied once they grow past this

PEEK_NOWAIT = int(socket.MSG_PEEK) | int(socket.MSG_DONTWAIT)
WAITALL = int(socket.MSG_WAITALL)
EXEC_FIXED = struct.Struct("<BIII")   # mode, timeout ms, output limit, code length
NO_ARGV_NO_STDIN = bytes(8)           # an execute request's tail without argv and stdin
REPLY_FIXED = struct.Struct("<IIBBHQBBiQI")  # header + status, flags, exit, us, out len


class ProtocolError(Exception):
    pass


# ---------------------------------------------------------------- wire encoding

def _b(v):
    return struct.pack("<I", len(v)) + v


def frame(ftype, rid, payload=b""):
    if len(payload) > MAX_PAYLOAD:
        raise ProtocolError("reply over the frame limit")
    return HEADER.pack(MAGIC, len(payload), PROTOCOL_VERSION, ftype, 0, rid) + payload


class Reader:
    """Decodes payload fields; any underrun is a ProtocolError."""

    def __init__(self, data):
        self.d, self.p = data, 0

    def take(self, n):
        if self.p + n > len(self.d):
            raise ProtocolError("message truncated")
        v = self.d[self.p:self.p + n]
        self.p += n
        return v

    def u8(self):
        return self.take(1)[0]

    def u32(self):
        return struct.unpack("<I", self.take(4))[0]

    def u64(self):
        return struct.unpack("<Q", self.take(8))[0]

    def bytes(self):
        return bytes(self.take(self.u32()))

    def done(self):
        if self.p != len(self.d):
            raise ProtocolError("trailing bytes")


def encode_reply(rid, status, flags, exit_code, exec_us, out, err, result_json):
    res = result_json.encode()
    n = 18 + len(out) + 4 + len(err) + 4 + len(res)
    if n > MAX_PAYLOAD:
        raise ProtocolError("reply over the frame limit")
    return b"".join((REPLY_FIXED.pack(MAGIC, n, PROTOCOL_VERSION, T_EXEC_REPLY, 0, rid, status,
                                      flags, exit_code, exec_us, len(out)),
                     out, struct.pack("<I", len(err)), err, struct.pack("<I", len(res)), res))


def encode_error(rid, code, message):
    return frame(T_ERROR, rid, struct.pack("<i", code) + _b(message.encode("utf-8", "replace")))


def encode_ok(rid, value=0):
    return frame(T_OK, rid, struct.pack("<Q", value))


# ---------------------------------------------------------------- results (API.md §3)

def result_json(v):
    """(<R> as JSON text, truncated?): number/string/bool/null, "nan"/"inf", else repr()
    as a string; strings past MAX_RESULT_CHARS are cut."""
    try:
        if isinstance(v, str) or not isinstance(v, (int, float, type(None))):
            np = sys.modules.get("numpy")
            if not (np is not None and isinstance(v, (np.bool_, np.integer, np.floating))):
                text = v if isinstance(v, str) else repr(v)
                if len(text) > MAX_RESULT_CHARS:
                    return json.dumps(text[:MAX_RESULT_CHARS]), True
                return json.dumps(text), False
        return _scalar_json(v), False
    except Exception as e:  # a hostile __repr__ must not break the agent
        return json.dumps(f"<repr failed: {type(e).__name__}>"), False


def _scalar_json(v):
    try:
        if v is None:
            return "null"
        if v is True or v is False:
            return "true" if v else "false"
        np = sys.modules.get("numpy")
        if np is not None and isinstance(v, np.bool_):
            return "true" if v else "false"
        if isinstance(v, int) or (np is not None and isinstance(v, np.integer)):
            try:
                return str(int(v))
            except ValueError:  # more digits than int->str allows
                return json.dumps(f"<int of {int(v).bit_length()} bits>")
        if isinstance(v, float) or (np is not None and isinstance(v, np.floating)):
            f = float(v)
            if math.isnan(f):
                return '"nan"'
            if math.isinf(f):
                return '"inf"' if f > 0 else '"-inf"'
            return repr(f)
        if isinstance(v, str):
            return json.dumps(v)
        return json.dumps(repr(v))
    except Exception as e:  # a hostile __repr__ must not break the agent
        return json.dumps(f"<repr failed: {type(e).__name__}>")


_shown_png = None  # the figure pyplot.show() displayed last in this cell


def _render_png(fig):
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def patch_pyplot():
    """Makes pyplot.show() keep the figure it shows (Agg cannot display anything), so a
    cell that shows and then closes its figure still returns it. Cheap when done."""
    plt = sys.modules.get("matplotlib.pyplot")
    if plt is None or getattr(plt.show, "_sandpool", False):
        return

    def show(*args, **kwargs):
        global _shown_png
        nums = plt.get_fignums()
        if nums:
            _shown_png = _render_png(plt.figure(nums[-1]))

    show._sandpool = True
    show.__doc__ = plt.show.__doc__
    plt.show = show


def figure_result():
    """The cell's figure as an image <R>: the last open one, else the last shown one;
    None without any. Closes all figures."""
    global _shown_png
    shown, _shown_png = _shown_png, None
    plt = sys.modules.get("matplotlib.pyplot")
    if plt is None:
        return None
    if shown is None:  # most cells: no figure, nothing shown, nothing to close
        try:
            if not plt.get_fignums():
                return None
        except Exception:
            pass  # the full path below decides, as before
    try:
        nums = plt.get_fignums()
        if nums:
            png = _render_png(plt.figure(nums[-1]))
        elif shown is not None:
            png = shown
        else:
            return None
        data = base64.b64encode(png).decode()
        if len(data) > MAX_IMAGE_JSON_BYTES:
            return json.dumps(f"<figure omitted: {len(data)} bytes of base64 PNG>")
        return json.dumps({"type": "image", "format": "png", "base64_data": data})
    except Exception:
        return None
    finally:
        try:
            plt.close("all")
        except Exception:
            pass


def capture_stream(fd):
    """sys.stdout/sys.stderr for the worker: unbuffered text over fd 1 or 2, so that what
    Python prints keeps its order with what C code and child processes write there, even
    within a line (one write(2) per write() call)."""
    return io.TextIOWrapper(io.FileIO(fd, "w", closefd=False), encoding="utf-8",
                            errors="backslashreplace", write_through=True)


_PLAIN = (str, int, float, bool, type(None))


def one_write_print(builtin_print, streams):
    """print() that writes its whole line with one write() call when it can, for the micro-VM,
    where every write(2) is a VM exit (≈ 25-30 µs on kvm-pvm) and print(x) makes two (x, then
    end). Same output, in the same order: only when each argument is of an exact built-in type
    whose str() runs no user code (str, int, float, bool, None), sep and end are str or None, and
    the file is one of `streams` (the unbuffered capture streams: one write(2) per write() call,
    compared by identity: a user object's __eq__ must not run); anything else, and an int str()
    refuses (over sys.get_int_max_str_digits(), which the builtin raises after writing what came
    before it), goes to the builtin print, whose errors and behaviour stay as they are."""
    def print(*args, sep=None, end=None, file=None, flush=False):
        f = sys.stdout if file is None else file
        if (any(f is s for s in streams) and type(sep) in (str, type(None)) and type(end) in (str, type(None))
                and all(type(a) in _PLAIN for a in args)):
            try:
                line = (" " if sep is None else sep).join(map(str, args)) + ("\n" if end is None else end)
            except ValueError:
                return builtin_print(*args, sep=sep, end=end, file=file, flush=flush)
            f.write(line)
            if flush:
                f.flush()
            return None
        return builtin_print(*args, sep=sep, end=end, file=file, flush=flush)
    print.__doc__, print.__qualname__, print.__module__ = builtin_print.__doc__, "print", "builtins"
    return print


def reseed():
    """Gives this process fresh random state (after a clone from a template, or a fork)."""
    random.seed()
    np = sys.modules.get("numpy")
    if np is not None:
        # The global generator's whole MT19937 state from the kernel: as unpredictable as
        # np.random.seed() (whose SeedSequence also draws from it), at half the pages written
        # in a fresh fork (≈ 130 copy-on-write faults fewer, bench/results/sandbox-2026-11-29.md).
        key = np.frombuffer(os.urandom(624 * 4), dtype=np.uint32)
        np.random.set_state(("MT19937", key, 624, 0, 0.0))


def output_cap(limit):
    """The bytes one stream of a cell may return: the host's `limit` (0: none asked), at most
    MAX_OUTPUT_BYTES. (The C supervisor caps the limit it reads the same way, supervisor.cc.)"""
    return min(limit, MAX_OUTPUT_BYTES) if limit else MAX_OUTPUT_BYTES


def clip(data, limit):
    """(data cut to `limit` bytes, never inside a UTF-8 sequence; truncated?)."""
    if limit <= 0 or len(data) <= limit:
        return data, False
    cut = limit
    for _ in range(3):  # back off over continuation bytes of a split character
        if cut > 0 and (data[cut] & 0xC0) == 0x80:
            cut -= 1
    return data[:cut], True


# ---------------------------------------------------------------- process helpers

_libc = None
_caps = None


def libc():
    """The C library through ctypes (loaded once per process), or None."""
    global _libc
    if _libc is None:
        try:
            _libc = ctypes.CDLL(None)
        except Exception:
            _libc = False
    return _libc or None


class VmBatch:
    """Several system calls for one exit of the micro-VM (sandpool's call kBatchSyscall in
    src/vmm/syscalls/dispatch.h): each exit costs ~25 us on kvm-pvm, and a cell's start (O_ASYNC
    on, poll, nudge), end (O_ASYNC off, both capture offsets, both captures' bytes) and reply
    (send, then wait for the next request) would make up to ten. The records and buffers are
    guest memory the VMM reads and writes through its checked guest pointers. Only created by
    serve_single, after open() finds it."""

    NR = 0x5350
    MAX = 8
    REC = struct.Struct("<Q6Qq")  # nr, six arguments, result

    @classmethod
    def open(cls):
        """A VmBatch when the VMM answers the call (count 0 -> EINVAL), else None. Made in the
        template VM, before its snapshot: its pages stay shared with every clone's."""
        try:
            b = cls()
            b._call(0)
        except OSError as e:
            return b if e.errno == errno.EINVAL else None
        except Exception:
            return None
        return None

    def __init__(self):
        self._ct = ctypes
        self.ibuf_len = self.ibuf_addr = 0
        self.recs = (ctypes.c_uint64 * (8 * self.MAX))()
        # struct pollfd (fd, events, revents: 8 bytes), then the nudge byte.
        self.pollfd = (ctypes.c_uint64 * 2)()
        self.pollfd[1] = ord("!")
        # Capture reads land here; anonymous mappings: pages never read into cost nothing.
        self.out_map = mmap.mmap(-1, MAX_OUTPUT_BYTES + 4)
        self.err_map = mmap.mmap(-1, MAX_OUTPUT_BYTES + 4)
        self.out_addr = ctypes.addressof(ctypes.c_char.from_buffer(self.out_map))
        self.err_addr = ctypes.addressof(ctypes.c_char.from_buffer(self.err_map))
        self._syscall = ctypes.CDLL(None, use_errno=True).syscall
        self._syscall.restype = ctypes.c_long
        self._args = (ctypes.c_long(self.NR), ctypes.c_void_p(ctypes.addressof(self.recs)))

    def attach(self, ibuf):
        """Where reply_and_recv reads to: the worker's receive buffer (an mmap, never resized)."""
        ct = self._ct
        self.ibuf_len = len(ibuf)
        self.ibuf_addr = ct.addressof((ct.c_char * len(ibuf)).from_buffer(ibuf))

    def _call(self, n):
        ct = self._ct
        r = self._syscall(self._args[0], self._args[1], ct.c_long(n), ct.c_long(0))
        if r < 0:
            e = ct.get_errno()
            raise OSError(e, os.strerror(e))
        return r

    def run(self, calls, need=None):
        """Runs [(nr, a0, a1, a2, a3), ...] in one exit and returns their results (-errno for
        the first that failed, -ECANCELED for those after it, which did not run). OSError for
        the batch call itself, or when one of the first `need` calls (default all) failed."""
        for i, (nr, a0, a1, a2, a3) in enumerate(calls):
            self.REC.pack_into(self.recs, i * 64, nr, a0, a1, a2, a3, 0, 0, -errno.ECANCELED)
        self._call(len(calls))
        rets = [struct.unpack_from("<q", self.recs, i * 64 + 56)[0] for i in range(len(calls))]
        for r in rets[:need]:
            if r < 0:
                raise OSError(-r, os.strerror(-r))
        return rets

    def cell_start(self, sock_fd, flags, nudge_fd):
        """fcntl(sock, F_SETFL, flags), poll(sock, 0) and, with nudge_fd >= 0, the nudge write
        (last: a full pipe means already nudged); True when the socket is readable."""
        struct.pack_into("<ihh", self.pollfd, 0, sock_fd, select.POLLIN, 0)
        addr = self._ct.addressof(self.pollfd)
        calls = [(72, sock_fd, fcntl.F_SETFL, flags, 0), (7, addr, 1, 0, 0)]
        if nudge_fd >= 0:
            calls.append((1, nudge_fd, addr + 8, 1, 0))
        return self.run(calls, need=2)[1] > 0

    def cell_end(self, sock_fd, flags, out_fd, out_base, err_fd, err_base, cap):
        """fcntl(sock, F_SETFL, flags), then for each capture its offset and up to `cap` bytes
        from its cell's start: ((out offset, out bytes), (err offset, err bytes))."""
        rets = self.run([(72, sock_fd, fcntl.F_SETFL, flags, 0),
                         (8, out_fd, 0, os.SEEK_CUR, 0), (8, err_fd, 0, os.SEEK_CUR, 0),
                         (17, out_fd, self.out_addr, cap, out_base),
                         (17, err_fd, self.err_addr, cap, err_base)])
        return (rets[1], self.out_map[:rets[3]]), (rets[2], self.err_map[:rets[4]])

    def attach_and_send(self, sock_fd, pid, data):
        """In one exit: fcntl(sock, F_GETFL), fcntl(sock, F_SETOWN, pid) and a send of `data`:
        (the socket's flags, bytes sent)."""
        addr = self._ct.cast(self._ct.c_char_p(data), self._ct.c_void_p).value
        flags, _, sent = self.run([(72, sock_fd, fcntl.F_GETFL, 0, 0), (72, sock_fd, fcntl.F_SETOWN, pid, 0),
                                   (44, sock_fd, addr, len(data), 0)])
        return flags, sent

    def reply_and_recv(self, sock_fd, reply, flags):
        """In one exit: sends `reply` whole, reads what comes next into the receive buffer, sets
        the socket's flags to `flags` (O_ASYNC on) and polls it: (bytes sent, bytes received,
        fcntl result, poll result), each -errno when it failed or did not run (after a failure
        or a short send)."""
        addr = self._ct.cast(self._ct.c_char_p(reply), self._ct.c_void_p).value
        struct.pack_into("<ihh", self.pollfd, 0, sock_fd, select.POLLIN, 0)
        return tuple(self.run([(44, sock_fd, addr, len(reply), 0),
                               (45, sock_fd, self.ibuf_addr, self.ibuf_len, 0),
                               (72, sock_fd, fcntl.F_SETFL, flags, 0),
                               (7, self._ct.addressof(self.pollfd), 1, 0, 0)], need=1))


def capabilities():
    global _caps
    if _caps is None:
        import importlib.util
        _caps = CAP_SHELL | CAP_INTERRUPT
        if "numpy" in sys.modules or importlib.util.find_spec("numpy"):
            _caps |= CAP_NUMPY
        if "matplotlib" in sys.modules or importlib.util.find_spec("matplotlib"):
            _caps |= CAP_MATPLOTLIB
    return _caps


# ---------------------------------------------------------------- file names (API.md §4)

def split_name(raw):
    """Components of a name relative to the data root; raises OSError(EINVAL/ENAMETOOLONG)."""
    if raw == b"/mnt/data" or raw.startswith(b"/mnt/data/"):
        raw = raw[len(b"/mnt/data"):].lstrip(b"/")
    if b"\0" in raw or raw.startswith(b"/"):
        raise OSError(errno.EINVAL, "invalid file name")
    if len(raw) > 4096:
        raise OSError(errno.ENAMETOOLONG, "file name too long")
    comps = [c for c in raw.split(b"/") if c not in (b"", b".")]
    for c in comps:
        if c == b"..":
            raise OSError(errno.EINVAL, "'..' in file name")
        if len(c) > 255:
            raise OSError(errno.ENAMETOOLONG, "file name component over 255 bytes")
    return comps


DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def open_dir(root_fd, comps, create=False):
    """fd of the directory root/comps, never following a symlink; caller closes it."""
    fd = os.dup(root_fd)
    try:
        for c in comps:
            try:
                nfd = os.open(c, DIR_FLAGS, dir_fd=fd)
            except FileNotFoundError:
                if not create:
                    raise
                try:
                    os.mkdir(c, 0o755, dir_fd=fd)
                except FileExistsError:
                    pass
                nfd = os.open(c, DIR_FLAGS, dir_fd=fd)
            os.close(fd)
            fd = nfd
        return fd
    except BaseException:
        os.close(fd)
        raise


def entry_of(name, st):
    if stat.S_ISREG(st.st_mode):
        t = 1
    elif stat.S_ISDIR(st.st_mode):
        t = 2
    elif stat.S_ISLNK(st.st_mode):
        t = 3
    else:
        t = 4
    size = st.st_size if t == 1 else 0
    return _b(name) + struct.pack("<BQq", t, size, st.st_mtime_ns)


# ---------------------------------------------------------------- worker

class Worker:
    """Serves the protocol on `sock` until EOF. One per interpreter life."""

    def __init__(self, sock, root, shared, nudge_fd, out_fd, err_fd, log_fd):
        self.sock = sock
        self.root = root
        self.root_fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        self.shared = shared          # page shared with the supervisor (ctypes array), or None
        self.nudge_fd = nudge_fd      # pipe to wake the supervisor, or -1
        self.out_fd, self.err_fd, self.log_fd = out_fd, err_fd, log_fd
        self.base = {out_fd: 0, err_fd: 0}  # where the current cell's output starts
        self.sock_flags = fcntl.fcntl(sock.fileno(), fcntl.F_GETFL)
        self.poller = select.poll()
        self.poller.register(sock.fileno(), select.POLLIN)
        self.rbuf = bytearray()
        # recv_into: no 1 MiB allocation (mmap/mremap/munmap) per read; an anonymous mapping,
        # so only the pages a read reaches cost memory. Private: Python's default, MAP_SHARED,
        # would be one buffer for every process forked after this (a template's clones, which
        # adopt a Worker made in the template: each session would read the others' requests).
        self.ibuf = mmap.mmap(-1, 64 << 10, flags=mmap.MAP_PRIVATE)
        self.ibuf_view = memoryview(self.ibuf)
        self.vm = None  # VmBatch in the micro-VM (serve_single)
        self.pending = collections.deque()  # frames read by the SIGIO handler
        self.eof = False
        self.executing = False  # user code is running: SIGINT/interrupt raise
        self.in_cell = False    # between O_ASYNC on and off: pings are answered at once
        self.sigio_missed = False  # a SIGIO outside a cell: the next cell start looks
        self.in_sigio = False  # on_sigio runs (a nested call only sets sigio_again)
        self.sigio_again = False
        self.sigint_pending = False  # a SIGINT that came while on_sigio ran (on_sigint)
        self.primed = None  # micro-VM: O_ASYNC already on for the exec frame in rbuf (readable?)
        self.deadline_ns = 0
        self.host_interrupt = False
        self.seq = 0
        self.uploads = {}
        self.code_cache = collections.OrderedDict()
        self.cell_names = collections.deque()  # sources kept for tracebacks
        self.is_fork_child = False
        # A cell may os.fork(); the child must never touch the agent's socket.
        os.register_at_fork(after_in_child=self._after_fork_in_child)
        self.cells = 0
        module = types.ModuleType("__main__")
        module.__dict__["__builtins__"] = builtins
        sys.modules["__main__"] = module
        self.globals = module.__dict__
        self.fflush = libc().fflush if libc() else None

    def adopt(self, root):
        """In a micro-VM clone: this Worker was made in the template (serve_single) on the
        template's descriptors; take the clone's root and fresh capture offsets (and, with
        adopt_socket, its socket once it has one)."""
        if self.root_fd >= 0:
            os.close(self.root_fd)
        self.root = root
        self.root_fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        self.base = {self.out_fd: 0, self.err_fd: 0}

    def adopt_supervisor(self, sock, shared, nudge_fd, log_fd):
        """In a process-tier clone: this Worker was made in the template (prepare_worker); take
        the supervisor's page, nudge pipe and log, and the session's socket in place of the
        placeholder. The placeholder's descriptors (socket, root) were closed by the clone's
        isolation: their numbers may be reused, so they are never closed through these objects."""
        self.shared, self.nudge_fd, self.log_fd = shared, nudge_fd, log_fd
        # Set by our at-fork callback when a fork ran the interpreter's callbacks (a template or
        # supervisor with more than one thread): this process is the agent all the same.
        self.is_fork_child = False
        self.sock.detach()
        self.sock = sock
        self.root_fd = -1
        self.poller = select.poll()
        self.poller.register(sock.fileno(), select.POLLIN)

    def adopt_socket(self, sock, flags=None):
        """The session's socket (`flags`: its F_GETFL flags, when the caller has read them)."""
        self.sock = sock
        self.sock_flags = fcntl.fcntl(sock.fileno(), fcntl.F_GETFL) if flags is None else flags

    def _after_fork_in_child(self):
        self.is_fork_child = True

    # ---- socket I/O

    def send(self, data):
        self.sock.sendall(data)

    def _parse(self):
        """Pops one whole frame (type, id, payload) from rbuf, or None."""
        if len(self.rbuf) < HEADER.size:
            return None
        magic, n, ver, ftype, flags, rid = HEADER.unpack_from(self.rbuf)
        if magic != MAGIC or ver != PROTOCOL_VERSION or not 1 <= ftype <= 20 or \
                (flags != 0 and (flags != F_WARM_UP or ftype != T_EXEC)):
            raise ProtocolError("bad frame header")
        if n > MAX_PAYLOAD:
            raise ProtocolError("frame over the limit")
        if len(self.rbuf) < HEADER.size + n:
            return None
        payload = bytes(self.rbuf[HEADER.size:HEADER.size + n])
        del self.rbuf[:HEADER.size + n]
        return ftype, rid, payload, flags

    def read_frame(self):
        if self.pending:
            return self.pending.popleft()
        while True:
            f = self._parse()
            if f is not None:
                return f
            if self.eof:
                return None
            want = 0
            if len(self.rbuf) >= HEADER.size:
                want = HEADER.size + HEADER.unpack_from(self.rbuf)[1] - len(self.rbuf)
            if want > len(self.ibuf):  # a large frame: read it whole
                data = self.sock.recv(min(want, 1 << 20))
                n = len(data)
                self.rbuf += data
            else:
                n = self.sock.recv_into(self.ibuf)
                self.rbuf += self.ibuf_view[:n]
            if not n:
                if self.rbuf:
                    raise ProtocolError("connection closed inside a frame")
                return None

    def on_sigio(self, signum, frm):
        """While a cell runs: act on interrupt and ping now, queue other requests.
        Only whole frames are taken from the socket (MSG_PEEK first), so a worker killed
        in the middle of a cell never leaves the stream cut inside a frame."""
        if self.is_fork_child:
            return
        if not self.in_cell:  # the main loop may be inside read_frame: leave rbuf alone
            self.sigio_missed = True
            return
        # Python runs a handler for a signal that arrives while a handler runs: a nested call
        # would take frames from rbuf under this one's feet (its _parse or unpack then sees a
        # shorter buffer). The nested call only asks this one to look again.
        if self.in_sigio:
            self.sigio_again = True
            return
        interrupt = False
        while True:
            self.in_sigio, self.sigio_again = True, False
            try:
                interrupt |= self._take_frames()
            finally:
                self.in_sigio = False
            if not self.sigio_again:
                break
        if interrupt:
            self.host_interrupt = True  # also seen by a cell about to start
        if self.sigint_pending or interrupt:
            self.sigint_pending = False
            if self.executing:
                raise KeyboardInterrupt

    def _take_frames(self):
        """on_sigio's work: moves the whole frames the socket holds into rbuf and acts on them;
        True when one was an interrupt."""
        interrupt = False
        while True:
            while True:  # frames already buffered, e.g. read together with the request
                try:
                    f = self._parse()
                except ProtocolError:
                    return interrupt  # the main loop reports it
                if f is None:
                    break
                if f[0] == T_INTERRUPT:
                    interrupt = True
                elif f[0] == T_PING and self.in_cell:
                    self.send(frame(T_PONG, f[1]))
                else:
                    self.pending.append(f)  # the main loop answers after the cell
            have = len(self.rbuf)
            try:
                if have < HEADER.size:
                    head = self.sock.recv(HEADER.size - have, PEEK_NOWAIT)
                    if len(head) < HEADER.size - have:
                        break
                    n = HEADER.unpack(bytes(self.rbuf) + head)[1]
                else:
                    n = HEADER.unpack_from(self.rbuf)[1]
                if n > MAX_PAYLOAD:
                    break
                need = HEADER.size + n - have
                if len(self.sock.recv(need, PEEK_NOWAIT)) < need:
                    break
            except (BlockingIOError, InterruptedError):
                break
            self.rbuf += self.sock.recv(need, WAITALL)
        return interrupt

    def on_sigint(self, signum, frm):
        if not self.executing:
            return
        if self.in_sigio:
            # Raised here it could fall between a recv and the rbuf that keeps its bytes (a frame
            # lost, the stream cut): on_sigio raises it once its frames are in rbuf.
            self.sigint_pending = True
            return
        raise KeyboardInterrupt

    # ---- supervisor handshake (shared page)

    def begin(self, rid, timeout_ms, limit):
        """Publishes the cell on the shared page; True when the supervisor needs a nudge."""
        now = time.monotonic_ns()
        self.deadline_ns = now + timeout_ms * 1_000_000
        if self.shared is None:
            return False
        self.seq += 1
        OUTPUT_PART.pack_into(self.shared, OUTPUT_OFFSET, limit, self.base[self.out_fd],
                              self.base[self.err_fd])
        WORKER_PART.pack_into(self.shared, 0, self.seq, 1, rid, self.deadline_ns, now)
        armed = struct.unpack_from("<q", self.shared, ARMED_OFFSET)[0]
        return armed == 0 or armed > self.deadline_ns

    def nudge(self):
        try:
            os.write(self.nudge_fd, b"!")
        except OSError:  # full pipe: already nudged
            pass

    def stopped_status(self):
        """What a cell stopped by KeyboardInterrupt reports: S_INTERRUPTED when the host asked
        (T_INTERRUPT) before its deadline, else S_TIMEOUT."""
        timed_out = time.monotonic_ns() >= self.deadline_ns
        return S_INTERRUPTED if self.host_interrupt and not timed_out else S_TIMEOUT

    def end(self, state):
        """RUN_REPLYING once the cell is over (no more signals; a death from here on is
        still answered by the supervisor), RUN_IDLE once the reply is sent."""
        if self.shared is not None:
            struct.pack_into("<Q", self.shared, 8, state)

    # ---- captured output

    def take_output(self, fd, limit, read=None):
        """This cell's bytes on capture file `fd` (cut to `limit`), truncated?. `fd`
        shares its file offset with fd 1 or 2 (dup2). The file is only emptied when
        large, so a quiet cell costs one lseek. `read`: (offset, bytes from the cell's start)
        already read (VmBatch.cell_end)."""
        if read is None:
            pos = os.lseek(fd, 0, os.SEEK_CUR)
        else:
            pos = read[0]
        base = self.base[fd]
        if pos == base:
            return b"", False
        if read is None:
            data = os.pread(fd, min(pos - base, limit + 4), base)
        else:
            data = read[1][:max(0, min(pos - base, limit + 4))]
        if pos > CAPTURE_RESET_BYTES:
            os.ftruncate(fd, 0)
            os.lseek(fd, 0, os.SEEK_SET)
            self.base[fd] = 0
        else:
            self.base[fd] = pos
        if pos - base > limit:
            return clip(data, limit)[0], True
        return data, False

    def collect_output(self, limit):
        """(out, out truncated?, err, err truncated?) of the cell just run. In the micro-VM one
        batch also turns O_ASYNC off (the process tier did that already)."""
        if self.vm is not None:
            try:
                o, e = self.vm.cell_end(self.sock.fileno(), self.sock_flags, self.out_fd,
                                        self.base[self.out_fd], self.err_fd,
                                        self.base[self.err_fd], limit + 4)
            except OSError:
                fcntl.fcntl(self.sock.fileno(), fcntl.F_SETFL, self.sock_flags)
            else:
                return self.take_output(self.out_fd, limit, o) + \
                    self.take_output(self.err_fd, limit, e)
        return self.take_output(self.out_fd, limit) + self.take_output(self.err_fd, limit)

    # ---- code execution

    def compile_cell(self, code):
        """(statements code object or None, last-expression code object or None), cached."""
        hit = self.code_cache.get(code)
        if hit is not None:
            self.code_cache.move_to_end(code)
            return hit
        self.cells += 1
        name = f"<cell-{self.cells}>"
        # Keep the source for tracebacks.
        linecache.cache[name] = (len(code), None, code.splitlines(True), name)
        self.cell_names.append(name)
        if len(self.cell_names) > MAX_CELL_SOURCES:
            linecache.cache.pop(self.cell_names.popleft(), None)
        body = last = None
        if "\n" not in code.rstrip():
            # A one-line cell is often one expression (print(x), df.head()): one compile, without
            # the syntax tree's Python objects (126 against 197 µs cold, 11-29; a statement costs
            # the failed try, which stops at its first token that no expression takes).
            try:
                last = compile(code, name, "eval")
            except (SyntaxError, ValueError):
                pass
        if last is None:
            tree = ast.parse(code, name, "exec")
            if tree.body and isinstance(tree.body[-1], ast.Expr):
                last = compile(ast.Expression(tree.body.pop().value), name, "eval")
            body = compile(tree, name, "exec")
        self.code_cache[code] = (body, last)
        if len(self.code_cache) > 256:
            self.code_cache.popitem(last=False)
        return body, last

    def forget_cells(self):
        """Forgets every cell compiled so far (code cache, cell numbers, sources): after a warm-up,
        which goes through all of compile_cell so that its first writes are made, but must leave
        nothing that a session's cell could reuse."""
        self.code_cache.clear()
        for name in self.cell_names:
            linecache.cache.pop(name, None)
        self.cell_names.clear()
        self.cells = 0

    def format_exception(self, e):
        """The traceback without the agent's own frames (exec wrapper, signal handlers)."""
        te = traceback.TracebackException(type(e), e, e.__traceback__)
        te.stack = traceback.StackSummary.from_list(
            [f for f in te.stack if f.filename != __file__])
        return "".join(te.format())

    def run_python(self, code):
        """(status, result json, traceback text); sets self.result_cut."""
        try:
            body, last = self.compile_cell(code)
        except (SyntaxError, ValueError, MemoryError, RecursionError) as e:
            return S_FAILURE, '""', "".join(traceback.format_exception_only(type(e), e))
        value = None
        try:
            self.executing = True
            try:
                if self.host_interrupt:
                    raise KeyboardInterrupt
                if body is not None:
                    exec(body, self.globals)
                if last is not None:
                    value = eval(last, self.globals)
            finally:
                self.executing = False
            result, self.result_cut = result_json(value) if last is not None else ('""', False)
            status, tb = S_SUCCESS, ""
        except KeyboardInterrupt as e:
            self.executing = False
            status = self.stopped_status()
            result, tb = '""', self.format_exception(e)
        except BaseException as e:  # SystemExit included: the interpreter stays
            self.executing = False
            result, status, tb = '""', S_FAILURE, self.format_exception(e)
        fig = figure_result()
        if fig is not None and status == S_SUCCESS:
            result = fig
        return status, result, tb

    def run_shell(self, req):
        """(status, exit code, message). The child writes to the captured fds 1 and 2."""
        argv = req["argv"] or ["bash", "-c", req["code"]]
        try:
            p = subprocess.Popen(argv, stdin=subprocess.PIPE, cwd=self.root,
                                 start_new_session=True)
        except OSError as e:
            return S_FAILURE, 127, f"{argv[0]}: {e.strerror}\n"
        status = None
        try:
            self.executing = True
            try:
                if self.host_interrupt:
                    raise KeyboardInterrupt
                p.communicate(req["stdin"], timeout=req["timeout_ms"] / 1000)
            finally:
                self.executing = False
        except (subprocess.TimeoutExpired, KeyboardInterrupt):
            status = self.stopped_status()
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            p.wait()
        rc = p.returncode
        if status is None:
            status = S_SUCCESS if rc == 0 else S_FAILURE
        return status, rc, ""

    def execute(self, rid, payload, warm_up=False):
        """Runs one execute request and sends its reply. `warm_up`: the host's own execute before
        the sandbox serves (F_WARM_UP): its compiled cell, cell number and source are forgotten, so
        that a session's first cell never finds its code compiled already."""
        if len(payload) < EXEC_FIXED.size:
            raise ProtocolError("execute request truncated")
        mode, timeout_ms, limit, n = EXEC_FIXED.unpack_from(payload)
        timeout_ms = timeout_ms or DEFAULT_TIMEOUT_MS
        end = EXEC_FIXED.size + n
        if len(payload) == end + 8 and payload.endswith(NO_ARGV_NO_STDIN):
            code, argv, stdin = payload[EXEC_FIXED.size:end], [], b""  # the usual cell
        else:
            r = Reader(payload)
            r.p = EXEC_FIXED.size
            code = r.take(n)
            argc = r.u32()
            argv = [r.bytes() for _ in range(argc)] if argc else []
            stdin = r.bytes()
            r.done()
        limit = output_cap(limit)
        self.host_interrupt = False
        self.sigint_pending = False  # one deferred in an on_sigio that then raised belongs to an earlier cell
        self.result_cut = False
        patch_pyplot()
        if _getsignal(SIGINT) != self.on_sigint:  # a cell replaced them
            signal.signal(signal.SIGINT, self.on_sigint)
            signal.signal(signal.SIGIO, self.on_sigio)
        sys.stdout, sys.stderr = self.stdout, self.stderr
        t0 = time.perf_counter_ns()
        nudge = self.begin(rid, timeout_ms, limit)
        fl = self.sock_flags
        readable = None  # the micro-VM's batch polls with its O_ASYNC and nudge
        if self.primed is not None:  # the reply's exit already turned O_ASYNC on and polled
            readable, self.primed = self.primed, None
            if nudge:
                self.nudge()
        elif self.vm is not None:
            try:
                readable = self.vm.cell_start(self.sock.fileno(), fl | os.O_ASYNC,
                                              self.nudge_fd if nudge else -1)
            except OSError:
                pass
        if readable is None:
            if nudge:
                self.nudge()
            fcntl.fcntl(self.sock.fileno(), fcntl.F_SETFL, fl | os.O_ASYNC)
        self.in_cell = True
        try:
            missed, self.sigio_missed = self.sigio_missed, False
            if self.rbuf or missed or (self.poller.poll(0) if readable is None else readable):
                self.on_sigio(signal.SIGIO, None)  # frames that arrived before O_ASYNC
            exit_code = 0
            if mode == 1:
                status, exit_code, tb = self.run_shell(
                    {"argv": argv, "code": code, "stdin": stdin, "timeout_ms": timeout_ms})
                result = '""'
            else:
                try:
                    text = code.decode("utf-8")
                except UnicodeDecodeError as e:
                    status, result, tb = S_FAILURE, '""', f"SyntaxError: {e}\n"
                else:
                    status, result, tb = self.run_python(text)
        except KeyboardInterrupt:  # landed between our own lines (or while the cell compiled)
            status, exit_code, result, tb = self.stopped_status(), 0, '""', "KeyboardInterrupt\n"
        finally:
            if self.vm is None:  # else collect_output's batch does it
                fcntl.fcntl(self.sock.fileno(), fcntl.F_SETFL, fl)
            self.in_cell = False
            self.end(RUN_REPLYING)
            if warm_up:
                self.forget_cells()
        if self.is_fork_child:
            os._exit(0)  # a process the cell forked came back here: it is not the agent
        exec_us = (time.perf_counter_ns() - t0) // 1000
        for stream in (self.stdout, self.stderr):
            try:
                stream.flush()
            except Exception:
                pass
        if self.fflush is not None:
            self.fflush(None)
        out, out_cut, err, err_cut = self.collect_output(limit)
        if tb:
            err, more_cut = clip(err + tb.encode("utf-8", "backslashreplace"), limit)
            err_cut = err_cut or more_cut
        flags = (F_STDOUT_TRUNC if out_cut else 0) | (F_STDERR_TRUNC if err_cut else 0) | \
            (F_RESULT_TRUNC if self.result_cut else 0)
        self.reply(encode_reply(rid, status, flags, exit_code, exec_us, out, err, result))
        self.end(RUN_IDLE)

    def reply(self, data):
        """Sends an execute reply. In the micro-VM, when nothing is buffered, the same exit also
        waits for the next request (the page still says RUN_REPLYING meanwhile: the VMM's watcher
        only acts on RUN_CELL, and nothing else ends an idle guest) and then turns O_ASYNC on and
        polls for the next cell; when what came is not one whole execute request, O_ASYNC goes
        off again before anything else reads the socket."""
        if self.vm is None or self.rbuf or self.pending or self.eof:
            return self.send(data)
        fl = self.sock_flags
        sent, got, on, ready = self.vm.reply_and_recv(self.sock.fileno(), data, fl | os.O_ASYNC)
        if sent < len(data):
            self.send(memoryview(data)[sent:])
            return
        if got > 0:
            self.rbuf += self.ibuf_view[:got]
        elif got == 0:
            self.eof = True  # read_frame: EOF (or a cut frame) as a plain recv would see it
        # got < 0 (EINTR, or an error the next plain recv reports): nothing read, O_ASYNC off
        if on != 0:
            return
        if got > 0 and len(self.rbuf) >= HEADER.size:
            magic, n, ver, ftype, flags, rid = HEADER.unpack_from(self.rbuf)
            if ftype == T_EXEC and n <= MAX_PAYLOAD and len(self.rbuf) >= HEADER.size + n:
                self.primed = ready > 0 or len(self.rbuf) > HEADER.size + n
                return
        fcntl.fcntl(self.sock.fileno(), fcntl.F_SETFL, fl)

    def warm_up(self):
        """Runs the path of one trivial cell without a request, before the hello. A worker is a
        fork: its first cell would otherwise pay the copy-on-write faults of everything that path
        touches (milliseconds here), on the request path of a new session."""
        saved = self.globals.copy()
        try:
            patch_pyplot()
            sys.stdout, sys.stderr = self.stdout, self.stderr
            status, result, tb = self.run_python("_ = 1\nprint(_)\n_")
            for stream in (self.stdout, self.stderr):
                stream.flush()
            if self.fflush is not None:
                self.fflush(None)
            out, _, err, _ = self.collect_output(MAX_OUTPUT_BYTES)
            encode_reply(0, status, 0, 0, 0, out, err, result)
        except Exception:
            pass  # a warm-up never matters for correctness
        finally:
            self.globals.clear()
            self.globals.update(saved)
            # Forgotten, so a clone that runs its own warm-up (after adopt) compiles the cell again:
            # the first write of the compiler's memory (≈ 150 pages, in a micro-VM each a
            # shadow-MMU fault) would otherwise fall on the session's first cell (+8 ms measured
            # there), for ≈ 600 KiB less idle memory.
            self.forget_cells()

    # ---- file operations (API.md §4): every name is resolved under root_fd, no symlinks

    def file_op(self, ftype, rid, payload):
        r = Reader(payload)
        if ftype in (T_LIST, T_STAT, T_DELETE):
            path, recursive = r.bytes(), r.u8()
            r.done()
            comps = split_name(path)
            if ftype == T_LIST:
                return self.list_dir(rid, comps, recursive)
            if ftype == T_STAT:
                return self.stat_path(rid, path, comps)
            return self.delete(rid, comps)
        if ftype == T_READ:
            path, offset, max_bytes = r.bytes(), r.u64(), r.u32()
            r.done()
            return self.read_file(rid, split_name(path), offset, max_bytes)
        if ftype == T_WRITE_OPEN:
            path, parents = r.bytes(), r.u8()
            r.done()
            return self.write_open(rid, split_name(path), parents)
        upload_id = r.u64()
        if ftype == T_WRITE_CHUNK:
            data = r.take(r.u32())
            r.done()
            return self.write_chunk(rid, upload_id, data)
        r.done()
        return self.write_finish(rid, upload_id, commit=(ftype == T_WRITE_CLOSE))

    def list_dir(self, rid, comps, recursive):
        fd = open_dir(self.root_fd, comps)
        parts, total, truncated = [], 0, 0
        stack = [(fd, b"")]
        try:
            while stack:
                dfd, prefix = stack.pop()
                try:
                    with os.scandir(dfd) as it:
                        entries = sorted(it, key=lambda e: e.name)
                    for e in entries:
                        name = os.fsencode(e.name)
                        if name.startswith(UPLOAD_PREFIX):
                            continue
                        st = e.stat(follow_symlinks=False)
                        item = entry_of(prefix + name, st)
                        if total + len(item) > MAX_PAYLOAD - 4096:
                            truncated = 1
                            stack.clear()
                            break
                        parts.append(item)
                        total += len(item)
                        if recursive and stat.S_ISDIR(st.st_mode):
                            try:
                                stack.append((os.open(name, DIR_FLAGS, dir_fd=dfd),
                                              prefix + name + b"/"))
                            except OSError:
                                pass
                finally:
                    os.close(dfd)
        finally:
            for dfd, _ in stack:
                os.close(dfd)
        payload = struct.pack("<I", len(parts)) + b"".join(parts) + bytes([truncated])
        self.send(frame(T_LIST_REPLY, rid, payload))

    def stat_path(self, rid, raw, comps):
        if not comps:
            st = os.fstat(self.root_fd)
        else:
            fd = open_dir(self.root_fd, comps[:-1])
            try:
                st = os.stat(comps[-1], dir_fd=fd, follow_symlinks=False)
            finally:
                os.close(fd)
        payload = struct.pack("<I", 1) + entry_of(b"/".join(comps), st) + b"\0"
        self.send(frame(T_STAT_REPLY, rid, payload))

    def delete(self, rid, comps):
        if not comps:
            raise OSError(errno.EINVAL, "cannot delete the data root")
        fd = open_dir(self.root_fd, comps[:-1])
        try:
            st = os.stat(comps[-1], dir_fd=fd, follow_symlinks=False)
            if stat.S_ISDIR(st.st_mode):
                shutil.rmtree(comps[-1], dir_fd=fd)  # fd-based, never follows symlinks
            else:
                os.unlink(comps[-1], dir_fd=fd)
        finally:
            os.close(fd)
        self.send(encode_ok(rid))

    def read_file(self, rid, comps, offset, max_bytes):
        if not comps:
            raise OSError(errno.EISDIR, "the data root is a directory")
        dfd = open_dir(self.root_fd, comps[:-1])
        try:
            fd = os.open(comps[-1], os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK,
                         dir_fd=dfd)
        finally:
            os.close(dfd)
        try:
            st = os.fstat(fd)
            if stat.S_ISDIR(st.st_mode):
                raise OSError(errno.EISDIR, "is a directory")
            if not stat.S_ISREG(st.st_mode):
                raise OSError(errno.EINVAL, "not a regular file")
            data = os.pread(fd, min(max_bytes or CHUNK, MAX_PAYLOAD - 4096), offset)
        finally:
            os.close(fd)
        eof = 1 if offset + len(data) >= st.st_size else 0
        payload = struct.pack("<QqB", st.st_size, st.st_mtime_ns, eof) + _b(data)
        self.send(frame(T_FILE_DATA, rid, payload))

    def write_open(self, rid, comps, parents):
        """Streams into a hidden temp file beside the target; rename on close."""
        if not comps:
            raise OSError(errno.EISDIR, "the data root is a directory")
        if comps[-1].startswith(UPLOAD_PREFIX):
            raise OSError(errno.EINVAL, "reserved file name")
        if len(self.uploads) >= MAX_UPLOADS:
            raise OSError(errno.EMFILE, "too many uploads in progress")
        dfd = open_dir(self.root_fd, comps[:-1], create=bool(parents))
        tmp = UPLOAD_PREFIX + str(rid).encode()
        try:
            try:  # fail now, not after the whole body was streamed
                if stat.S_ISDIR(os.stat(comps[-1], dir_fd=dfd, follow_symlinks=False).st_mode):
                    raise OSError(errno.EISDIR, "a directory has that name")
            except FileNotFoundError:
                pass
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                         0o644, dir_fd=dfd)
        except BaseException:
            os.close(dfd)
            raise
        self.uploads[rid] = [fd, dfd, tmp, comps[-1], 0]
        self.send(encode_ok(rid, rid))

    def write_chunk(self, rid, upload_id, data):
        up = self.uploads.get(upload_id)
        if up is None:
            raise OSError(errno.EBADF, "unknown upload id")
        view = memoryview(data)
        try:
            while view:
                n = os.write(up[0], view)
                view = view[n:]
                up[4] += n
        except OSError:
            self.drop_upload(upload_id)  # e.g. ENOSPC: free the space now
            raise
        self.send(encode_ok(rid, up[4]))

    def drop_upload(self, upload_id):
        fd, dfd, tmp, _, _ = self.uploads.pop(upload_id)
        os.close(fd)
        try:
            os.unlink(tmp, dir_fd=dfd)
        except OSError:
            pass
        os.close(dfd)

    def write_finish(self, rid, upload_id, commit):
        up = self.uploads.get(upload_id)
        if up is None:
            raise OSError(errno.EBADF, "unknown upload id")
        if not commit:
            self.drop_upload(upload_id)
            return self.send(encode_ok(rid))
        fd, dfd, tmp, name, size = up
        try:
            os.rename(tmp, name, src_dir_fd=dfd, dst_dir_fd=dfd)
        except OSError:
            self.drop_upload(upload_id)
            raise
        del self.uploads[upload_id]
        os.close(fd)
        os.close(dfd)
        self.send(encode_ok(rid, size))

    # ---- main loop

    def hello_frame(self, restart_count, reason):
        caps = capabilities()
        pyver = ".".join(map(str, sys.version_info[:3])).encode()
        payload = _b(AGENT_VERSION.encode()) + struct.pack("<I", os.getpid()) + _b(pyver) + \
            struct.pack("<IIB", caps, restart_count, reason)
        return frame(T_HELLO, 0, payload)

    def serve(self):
        while True:
            f = self.read_frame()
            if f is None:
                return EXIT_EOF
            ftype, rid, payload, flags = f
            try:
                if ftype == T_EXEC:
                    self.execute(rid, payload, warm_up=flags == F_WARM_UP)
                elif ftype == T_PING:
                    Reader(payload).done()
                    self.send(frame(T_PONG, rid))
                elif ftype == T_INTERRUPT:
                    pass  # nothing runs: nothing to interrupt
                elif ftype == T_RESEED:
                    reseed()
                    self.send(encode_ok(rid))
                elif ftype in (T_LIST, T_STAT, T_DELETE, T_READ, T_WRITE_OPEN, T_WRITE_CHUNK,
                               T_WRITE_CLOSE, T_WRITE_ABORT):
                    self.file_op(ftype, rid, payload)
                else:
                    self.send(encode_error(rid, errno.EPROTO, "not a request type"))
            except OSError as e:
                if e.errno in (errno.EPIPE, errno.ECONNRESET) and isinstance(e, ConnectionError):
                    return EXIT_EOF
                self.send(encode_error(rid, e.errno or errno.EIO, e.strerror or str(e)))


def _attach_session(w, sock, pid, hello):
    """The worker's last steps before it serves: its socket, SIGIO to this process, Hello. In
    the micro-VM, the three calls are one exit (VmBatch)."""
    if w.vm is not None:
        flags, sent = w.vm.attach_and_send(sock.fileno(), pid, hello)
        w.adopt_socket(sock, flags)
        if sent < len(hello):
            w.send(hello[sent:])  # a short send: the rest as usual
        return
    w.adopt_socket(sock)
    fcntl.fcntl(sock.fileno(), fcntl.F_SETOWN, pid)
    w.send(hello)


def _make_worker(sock, root, shared, nudge_fd, out_fd, err_fd, log_fd, vm_batch):
    """A Worker on these descriptors, its output captured (fds 1 and 2), using the micro-VM's
    batch calls when there are (vm_batch)."""
    w = Worker(sock, root, shared, nudge_fd, out_fd, err_fd, log_fd)
    if vm_batch is not None:
        vm_batch.attach(w.ibuf)
        w.vm = vm_batch
    w.stdout, w.stderr = capture_stream(1), capture_stream(2)
    return w


def _run_worker(sock, root, shared, nudge_fd, out_fd, err_fd, log_fd, restarts, reason,
                vm_batch=None, worker=None, session_wait_fd=-1, warm_up=True):
    """Body of a freshly forked worker; never returns. `worker`: a Worker made (and warmed up)
    before the micro-VM template's snapshot (serve_single), adopted here instead of a new one;
    it warms up again (its code cache emptied), which now writes far fewer pages.
    `session_wait_fd` >= 0 (a micro-VM clone run ahead, GO_AHEAD): `sock`'s fd is not the session yet;
    everything up to the warm-up is made without it, then one read of that descriptor waits for
    the VMM to attach the session."""
    code = 1
    try:
        if libc():
            libc().prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG: die with the supervisor
        signal.signal(signal.SIGTERM, signal.SIG_DFL)  # not the supervisor's handlers
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        signal.set_wakeup_fd(-1)
        try:  # the OOM killer takes the worker (and what it starts), not the supervisor
            with open("/proc/self/oom_score_adj", "w") as f:
                f.write("1000")
        except OSError:
            pass
        devnull = os.open(os.devnull, os.O_RDONLY)
        os.dup2(devnull, 0)  # input() gets EOF instead of blocking the cell forever
        os.close(devnull)
        for fd in (out_fd, err_fd):
            os.ftruncate(fd, 0)
            os.lseek(fd, 0, os.SEEK_SET)
        os.dup2(out_fd, 1)
        os.dup2(err_fd, 2)
        if worker is None:
            w = _make_worker(sock, root, shared, nudge_fd, out_fd, err_fd, log_fd, vm_batch)
        else:
            w = worker
            w.adopt(root)
        sys.stdout, sys.stderr = w.stdout, w.stderr
        if vm_batch is not None:  # one VM exit per print() instead of two
            builtins.print = one_write_print(_BUILTIN_PRINT, (w.stdout, w.stderr))
        signal.signal(signal.SIGIO, w.on_sigio)
        signal.signal(signal.SIGINT, w.on_sigint)
        os.chdir(root)
        reseed()
        if warm_up:
            w.warm_up()
        hello = w.hello_frame(restarts, reason)
        pid = os.getpid()
        if session_wait_fd >= 0:
            # What follows the wait runs once first on a throwaway socket: its first touch of
            # each page (a shadow-MMU fault each in the micro-VM, ≈ 70) then happens here,
            # ahead, and not between the session's arrival and the Hello; so does the serve
            # loop's first wait for a request (EOF here: nothing is kept), which its first run
            # after the Hello made 0.2-0.45 ms slower (≈ 10 faults).
            a, b = socket.socketpair()
            try:
                _attach_session(w, a, pid, hello)
                b.shutdown(socket.SHUT_WR)  # (not close: the unread Hello would reset `a`)
                if w.read_frame() is not None:
                    raise ProtocolError("a frame on the throwaway socket")
            finally:
                a.close()
                b.close()
            if not os.read(session_wait_fd, 16):
                raise BrokenPipeError("the VMM went away before the session")
        _attach_session(w, sock, pid, hello)
        code = w.serve()
    except ProtocolError as e:
        os.write(log_fd, f"sandpool agent: protocol error: {e}\n".encode())
        code = EXIT_PROTOCOL
    except (BrokenPipeError, ConnectionResetError):
        code = EXIT_EOF
    except BaseException:
        os.write(log_fd, traceback.format_exc().encode())
        code = 1
    finally:
        os._exit(code)


def take_capture(fd, base, limit):
    """(the bytes of capture file `fd` from `base` on, cut to `limit`; truncated?)."""
    size = os.fstat(fd).st_size
    data = os.pread(fd, max(0, min(size - base, limit + 4)), base)
    return clip(data, limit)


class SupervisedWorker(ctypes.Structure):
    """struct sp_agent_worker (src/agent/supervisor.h): what the supervisor hands each worker."""
    _fields_ = [("shared_addr", ctypes.c_uint64), ("nudge_fd", ctypes.c_int32),
                ("out_fd", ctypes.c_int32), ("err_fd", ctypes.c_int32), ("log_fd", ctypes.c_int32),
                ("restarts", ctypes.c_uint32), ("reason", ctypes.c_uint32)]


def serve(sock_fd, lib, root="/mnt/data", grace_ms=DEFAULT_GRACE_MS, preload=(), first_warm_up=True):
    """Runs the agent on the connected socket `sock_fd` until the host closes it: this process
    becomes the supervisor (`lib`: libsandpool_clone.so, loaded with ctypes.PyDLL, or its path),
    which never returns to Python and exits with the agent's exit code (EXIT_*); its workers
    return from the call and serve (serve_worker). Returns 1 only when the supervisor could not
    start. (A pool template's clone starts its supervisor in C instead, sp_tpl_serve.)"""
    os.environ.setdefault("MPLBACKEND", "Agg")
    for name in preload:
        try:
            __import__(name)
        except Exception as e:
            os.write(2, f"sandpool agent: preload {name}: {e}\n".encode())
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the worker sets its own handler
    libc()          # loaded once here, not in every worker
    capabilities()
    if isinstance(lib, (str, bytes)):
        lib = ctypes.PyDLL(lib)  # PyDLL: the GIL stays held (the fork needs it)
    w = SupervisedWorker()
    rc = lib.sp_agent_supervise(sock_fd, grace_ms, ctypes.byref(w))
    if rc != 0:
        os.write(2, f"sandpool agent: supervisor: {os.strerror(-rc)}\n".encode())
        return 1
    serve_worker(sock_fd, w, root, first_warm_up)


def serve_worker(sock_fd, w, root="/mnt/data", first_warm_up=True, prepared=None):
    """Body of each worker the supervisor forks (`w`: its SupervisedWorker); never returns.
    first_warm_up=False: the first worker skips its hello-time warm-up cell, because the host
    sends a warm-up execute of its own before the first request (a restarted worker, which gets
    none, still runs it). `prepared`: the template's Worker (prepare_worker), adopted."""
    sock = socket.socket(fileno=sock_fd)
    sock.setblocking(True)
    shared = (ctypes.c_uint64 * (SHARED.size // 8)).from_address(w.shared_addr)
    if prepared is not None:
        prepared.adopt_supervisor(sock, shared, w.nudge_fd, w.log_fd)
    _run_worker(sock, root, shared, w.nudge_fd, w.out_fd, w.err_fd, w.log_fd, w.restarts, w.reason,
                worker=prepared, warm_up=w.restarts > 0 or first_warm_up)


# ---- single-process mode (micro-VM tier, src/vmm/pool_template.cc)
#
# A guest of the kernel-less VMM cannot fork, so there is no supervisor: the worker runs in the
# only process and the VMM outside the guest plays the supervisor's part. Descriptors: 3 the
# host socket, 4 a control socket to the VMM, 1 and 2 capture files the VMM owns (they outlive
# a killed guest). The template VM freezes at the first read of fd 4; each clone (and each
# replacement after a death) resumes with a GO record, reseeds, registers the shared page and
# runs the worker, which answers first for the cell its predecessor died in. A pool's first clone
# of a sandbox gets GO_AHEAD: it runs in the VMM child made ahead of any request, fd 3 still
# /dev/null, makes everything that needs no session (up to its warm-up cell), and reads fd 4 again: the
# VMM's one byte there, once the session's socket is fd 3 and the sandbox isolated, lets it say
# hello.
GO = struct.Struct("<IIii")  # restarts, reason, the dead guest's term signal, exit code; + page; + flags
GO_FLAGS = struct.Struct("<I")
GO_AHEAD = 1


def _answer_dead_cell(sock, page, reason, term_signal, exit_code, grace_ms):
    """The reply of the cell a dead guest was running (as the supervisor's, supervisor.cc)."""
    seq, running, rid, deadline, start = WORKER_PART.unpack_from(page, 0)
    limit, out_base, err_base = OUTPUT_PART.unpack_from(page, OUTPUT_OFFSET)
    if not running:
        return
    limit = output_cap(limit)  # the page is guest memory the cell could overwrite
    if reason == R_TIMEOUT:
        st = S_TIMEOUT
        note = ("sandpool: the code did not stop within %d ms after the timeout; the "
                "interpreter was restarted and its variables were lost\n" % grace_ms)
    elif reason == R_OOM:
        st = S_OOM
        note = "sandpool: the interpreter was killed (out of memory); variables were lost\n"
    else:
        st = S_CRASHED
        how = "signal %d" % term_signal if term_signal else "exit code %d" % exit_code
        note = "sandpool: the interpreter crashed (%s); variables were lost\n" % how
    out, out_cut = take_capture(1, out_base, limit)
    err, err_cut = take_capture(2, err_base, limit)
    err, more_cut = clip(err + note.encode(), limit)
    flags = F_VARS_LOST | (F_STDOUT_TRUNC if out_cut else 0) | \
        (F_STDERR_TRUNC if err_cut or more_cut else 0)
    code = -term_signal if term_signal else exit_code
    exec_us = max(0, time.monotonic_ns() - start) // 1000
    sock.sendall(encode_reply(rid, st, flags, code, exec_us, out, err, '""'))


def _worker_made_ahead(sock, shared, nudge_fd, log_fd, vm_batch=None):
    """A Worker made in a pool's template, its warm-up cell run there (its output to /dev/null),
    or None when that failed (each worker then makes its own). Its capture files are fds 1 and 2."""
    try:
        worker = _make_worker(sock, "/", shared, nudge_fd, 1, 2, log_fd, vm_batch)
        saved = os.dup(1), os.dup(2)
        null = os.open(os.devnull, os.O_RDWR)  # readable too: the warm-up reads its output back
        os.dup2(null, 1)
        os.dup2(null, 2)
        try:
            worker.warm_up()
        finally:
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            for fd in (*saved, null):
                os.close(fd)
            sys.stdout, sys.stderr = sys.__stdout__, sys.__stderr__
        return worker
    except Exception as e:  # never fatal
        os.write(2, f"sandpool agent: worker made ahead: {e}\n".encode())
        return None


def prepare_worker():
    """The Worker a process-tier pool's template makes before it serves forks (template.py): what
    it allocates and first writes, and its warm-up cell's first writes, then stay shared with
    every clone, whose workers adopt it (serve_worker). None when that failed. Its socket is a
    placeholder, and so are its root and log descriptors: a clone closes them all (sp_clone_enter)."""
    a, b = socket.socketpair()
    b.detach()  # never closed by an object (in a clone the number means nothing)
    return _worker_made_ahead(a, None, -1, 2)


def serve_single(sock_fd=3, ctl_fd=4, root="/mnt/data", grace_ms=DEFAULT_GRACE_MS, preload=()):
    """The agent in one process (no fork), for the micro-VM tier. Never returns in a clone:
    the guest exits with the worker's exit code."""
    import gc
    os.environ.setdefault("MPLBACKEND", "Agg")
    for name in preload:
        try:
            __import__(name)
        except Exception as e:
            os.write(2, f"sandpool agent: preload {name}: {e}\n".encode())
    if "matplotlib.pyplot" in sys.modules:
        patch_pyplot()
    libc()
    capabilities()
    # Guest memory the VMM reads (deadlines): 8-byte words, so the VMM's loads are aligned.
    shared = (ctypes.c_uint64 * (SHARED.size // 8))()
    vm_batch = VmBatch.open()
    if vm_batch is not None:
        # Run the batch paths here, before the snapshot: what they first write (ctypes call
        # set-up, the interpreter's specialisations) then stays shared with every clone.
        for _ in range(16):
            try:
                vm_batch.run([(72, ctl_fd, fcntl.F_GETFL, 0, 0)] * 5)
                vm_batch.run([(7, ctypes.addressof(vm_batch.pollfd), 0, 0, 0)] * 4, need=0)
            except OSError:
                break
    # The worker is made and its warm-up cell run here, in the template, instead of in every
    # clone: what they allocate and first write then stays shared with every clone, whose idle
    # memory (the 3 MiB budget, issue 6) no longer holds those pages (3.0 -> 2.4 MiB); each clone
    # still runs the warm-up once (Worker.adopt), which copies only what it writes again. Fds 1
    # and 2 are the server's log in the template: the warm-up's output goes to /dev/null. The
    # socket and root are the clone's (Worker.adopt).
    sock = socket.socket(fileno=sock_fd)
    sock.setblocking(True)
    log_fd = os.open(os.devnull, os.O_WRONLY | os.O_CLOEXEC)
    worker = _worker_made_ahead(sock, shared, ctl_fd, log_fd, vm_batch)
    gc.collect()
    gc.freeze()
    go = os.read(ctl_fd, 4096)  # the template VM is frozen here
    if len(go) < GO.size + SHARED.size:
        return EXIT_PROTOCOL
    restarts, reason, term_signal, exit_code = GO.unpack_from(go)
    flags = 0
    if len(go) >= GO.size + SHARED.size + GO_FLAGS.size:
        flags, = GO_FLAGS.unpack_from(go, GO.size + SHARED.size)
    os.write(ctl_fd, b"A" + struct.pack("<Q", ctypes.addressof(shared)))
    if reason != R_INITIAL:
        try:
            _answer_dead_cell(sock, go[GO.size:GO.size + SHARED.size], reason, term_signal,
                              exit_code, grace_ms)
        except (BrokenPipeError, ConnectionResetError):
            return EXIT_EOF
    _run_worker(sock, root, shared, ctl_fd, 1, 2, log_fd, restarts, reason, vm_batch=vm_batch,
                worker=worker, session_wait_fd=ctl_fd if flags & GO_AHEAD else -1)


def main(argv=None):
    import argparse
    ap = argparse.ArgumentParser(description="sandpool code-interpreter agent")
    ap.add_argument("--fd", type=int, required=True, help="connected socket to the host")
    ap.add_argument("--root", default="/mnt/data", help="working directory and file root")
    ap.add_argument("--grace-ms", type=int, default=DEFAULT_GRACE_MS,
                    help="after a timeout, how long the cell may take to stop")
    ap.add_argument("--preload", default="",
                    help="comma-separated modules to import once, before forking workers")
    ap.add_argument("--supervisor-lib", default=os.environ.get("SANDPOOL_AGENT_LIB", ""),
                    help="libsandpool_clone.so, which holds the supervisor "
                         "(default: $SANDPOOL_AGENT_LIB)")
    a = ap.parse_args(argv)
    if not a.supervisor_lib:
        ap.error("--supervisor-lib (or SANDPOOL_AGENT_LIB) is required")
    pre = [m for m in a.preload.split(",") if m]
    if "matplotlib" in pre and "matplotlib.pyplot" not in pre:
        pre.append("matplotlib.pyplot")
    return serve(a.fd, a.supervisor_lib, a.root, a.grace_ms, pre)


if __name__ == "__main__":
    sys.exit(main())
