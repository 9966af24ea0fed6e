#!/usr/bin/python3
"""Black-box fuzzer of sandpool's HTTP API: opt-in, standard library only, not a meson test (it runs for minutes).

Usage: tests/fuzz/api_fuzz.py BUILD_DIR [--seconds N] [--seed S] [--pool|--no-pool] [--rate R]
                              [--server-log FILE] [--findings-dir DIR] [--no-auth]

It starts BUILD_DIR/src/sandpool serve on 127.0.0.1 (port 0, --port-file; an API key, an access log, short header and
idle timeouts) and for --seconds sends a seeded random mix of (1) valid requests to every route of shared/API.md and
the README (both client families' shapes, the pools API with random safe settings, files upload/list/download/delete,
executions sync and async, sessions, metadata, /metrics, /openapi.json, /healthz, /readyz) and interleavings of them
(a pool or session deleted under an upload, a download or an execution) and (2) the same requests mutated: wrong methods, bad, missing and duplicated query
parameters, over-long identifiers and paths, percent-encoding garbage, invalid UTF-8, hostile JSON (truncated, deeply
nested, wrong types, huge numbers, NaN-like values, duplicate keys), hostile multipart bodies, Content-Length lies,
bad chunked framing, pipelining, half-closed and reset connections, header limits and raw garbage.

After every answer it checks: the server process is alive and its stderr has no sanitizer report; the answer is a
well-formed HTTP/1.1 response (status line, header syntax, Date, a body framed by Content-Length or chunked, none for
HEAD, 204 and 1xx); the status and error code are ones API.md allows for that route and that input (the ALLOWED
table below, with the reasons, narrowed by what the fuzzer knows: wrong token → 401, missing pool → 404
PoolNotFound, invalid identifier or file name → 400 ...); error answers carry {"error":{"code","message","traceId"}}
and a matching x-ms-error-code (405 with Allow, 429 with Retry-After); successful answers have the documented shape
and, for cells whose value is known (EXPECTED_RESULT), that value; no answer takes longer than BOUND_S (executions,
allocation waits and pool creation have their own bounds). The same seed gives the same requests (in --no-pool mode
the same run). At the end: the fuzz pools and sessions are removed and the server's descriptors and threads must
come back to their starting counts, RSS must not keep growing (the last third of the samples against the first),
and SIGTERM, with an execution and a half-sent head in flight, must stop it with exit status 0.

--no-pool: --no-default-pool, and no sandbox is ever made: every pool-settings body sent is invalid by construction
(a poison field the server refuses) or names a CustomContainer image that does not exist (refused at its import,
before any sandbox), so it runs against the ASan/UBSan build, e.g.
  ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \\
      tests/fuzz/api_fuzz.py build-asan --no-pool --seconds 300 --server-log /tmp/asan-server.log
--pool (default): a PythonLTS default pool (--pool-ready 2 --pool-max 8, 20 s cooldown) plus pools created and deleted
at run time (at most two at once, small and short-lived): real sessions, executions and files. Release build only.

Output: requests per route and per status, then findings, each with the exact bytes sent (repr, cut at 2 KiB; the
full bytes go to --findings-dir), and exit status 1 when there is a finding (0 otherwise; 2 on usage errors).
Deviations already known and documented are listed separately (KNOWN) and do not fail the run.
"""
import argparse
import collections
import hashlib
import json
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "integration"))
import harness  # noqa: E402  (starts the server on port 0 and waits for its port file)

BOUND_S = 10.0            # any answer but executions', allocation waits' and pool creation's
EXEC_BOUND_S = 45.0       # an execution (its timeout is capped at 10 s by the fuzzer) plus its queue
CREATE_BOUND_S = 90.0     # POST /pools answers once the pool's template is up
HEADER_TIMEOUT_MS = 2000  # --header-timeout-ms: stalled heads end quickly
IDLE_TIMEOUT_MS = 4000    # --idle-timeout-ms: stalled bodies and idle keep-alives end quickly
API_KEY = "fuzz-key-0123456789"
POISON = "fuzzPoisonField"  # an unknown pool setting: the server must refuse the whole body (400)
FUZZ_POOLS = ("fz-a", "fz-b")
MAX_BODY = 1 << 20        # --max-body-bytes default: routes without their own limit
EXEC_BODY_LIMIT = 8 << 20

# ---------------------------------------------------------------------------------------------------------------
# What the server may answer, per route (API.md §1-§5 and the README's "Pool management" / "Where the contract left
# room"). (status, error code); None for a success. The expectation of a request is narrowed from these by what the
# fuzzer knows about it (expectation()): a missing pool must be 404 PoolNotFound, an invalid identifier 400
# InvalidIdentifier, an invalid file name 400 InvalidFileName, a known-bad body 400, a wrong token 401.
# ---------------------------------------------------------------------------------------------------------------
U = (401, "Unauthorized")                       # §1: with API keys configured, a wrong or missing token
SESSION_COMMON = {(404, "PoolNotFound"),        # README: session routes of an unknown pool
                  (400, "InvalidIdentifier"),   # §1: identifier rules
                  U}
ALLOC = {(429, "SessionPoolFull"),              # §5: pool full (429 + Retry-After) ...
         (404, "SessionPoolFull"),              # ... or 404 when the pool says poolFullStatusCode 404
         (503, "NoReadySession")}               # README: no ready sandbox within allocationWaitInMilliseconds
EXEC = SESSION_COMMON | ALLOC | {(200, None),
                                 (400, "InvalidRequestBody"),    # not an object, no code, wrong types
                                 (429, "ExecutionQueueFull")}    # README: 64 executions per session
FILE_ERRS = {(400, "InvalidFileName"),          # §4: name rules (and ENOTDIR/ELOOP inside, README)
             (400, "IsADirectory"),             # a directory where a file was named
             (404, "FileNotFound")}             # no such file (or parent directory)
ALLOWED = {
    "healthz": {(200, None)},
    "readyz": {(200, None)},                    # 503 NotReady only while draining: never during the run
    "metrics": {(200, None)},
    "openapi": {(200, None)},
    "pools.list": {(200, None), U},
    "pools.create": {(201, None), U,
                     (400, "InvalidPoolSettings"),                # unknown fields, bad values, bad JSON
                     (409, "PoolExists"), (409, "TooManyPools"),  # README: name taken; 32 pools
                     (409, "PoolDeleted")},                       # README: deleted while being created
    "pools.get": {(200, None), (404, "PoolNotFound"), U},
    "pools.update": {(200, None), (404, "PoolNotFound"), (400, "InvalidPoolSettings"), U,
                     (409, "PoolBeingCreated")},
    "pools.delete": {(204, None), (404, "PoolNotFound"), U},
    "execute": EXEC,
    "python.execute": EXEC,
    "executions.post": EXEC | {(202, None)},    # Asynchronous: answered at once with Running (202 Accepted)
    "executions.get": SESSION_COMMON | {(200, None), (404, "ExecutionNotFound")},
    "session.get": SESSION_COMMON | {(200, None), (404, "SessionNotFound")},
    "session.delete": SESSION_COMMON | {(204, None), (404, "SessionNotFound")},
    "mgmt.getSession": SESSION_COMMON | {(200, None), (404, "SessionNotFound")},
    "mgmt.stopSession": SESSION_COMMON | {(200, None), (404, "SessionNotFound")},
    "listSessions": {(200, None), (404, "PoolNotFound"), U},
    "mgmt.listSessions": {(200, None), (404, "PoolNotFound"), U},
    "metadata": {(200, None), (404, "PoolNotFound"), U},
    "files.upload": SESSION_COMMON | ALLOC | FILE_ERRS | {(200, None), (400, "InvalidRequestBody"),
                                                          (413, "FileTooLarge"),         # §4: upload limit
                                                          (507, "SessionStorageFull")},  # §4: quota
    "files.post": None,  # = files.upload
    "files.list": SESSION_COMMON | ALLOC | FILE_ERRS | {(200, None)},
    "files.content": SESSION_COMMON | ALLOC | FILE_ERRS | {(200, None)},
    "files.get": SESSION_COMMON | ALLOC | FILE_ERRS | {(200, None)},
    "files.delete": SESSION_COMMON | ALLOC | FILE_ERRS | {(204, None),
                                                          (409, "DirectoryNotEmpty")},  # README: ENOTEMPTY
}
ALLOWED["files.post"] = ALLOWED["files.upload"]
# Answers of the HTTP layer itself (README "HTTP behaviour"): only for requests the fuzzer made malformed, slow or
# over a limit; a well-formed request never gets them.
PROTO = {(400, "BadRequest"), (408, "RequestTimeout"), (413, "PayloadTooLarge"), (414, "UriTooLong"),
         (431, "RequestHeaderFieldsTooLarge")}
UNROUTED = {(404, "NotFound")}        # README: unknown path → 404 NotFound
BAD_METHOD = {(405, "MethodNotAllowed")}  # known path, wrong method → 405 with Allow
# What any route may answer to bytes the fuzzer cannot route; InvalidQueryParameter is listSessions' answer to a bad
# skip, added per request (expectation), so in no ALLOWED set.
ANY_ROUTE = set().union(*ALLOWED.values()) | PROTO | UNROUTED | BAD_METHOD | {(400, "InvalidQueryParameter")}
# 500s the fuzzer provokes on purpose: allowed only for requests marked with the matching reason.
#  SessionLost: README, "a sandbox that dies outright answers 500 SessionLost" (code that kills its sandbox's init).
HOSTILE_500 = {(500, "SessionLost")}
# A request in flight when its session is deleted or stopped, or its pool deleted: README, 409 SessionEnded.
SESSION_ENDED = {(409, "SessionEnded")}

# Known deviations (documented; they do not fail the run): (route key, status, code) → why.
KNOWN = {}  # (route, status, code): why; none at present (a missing image was one: now 400 InvalidPoolSettings)

# The route table as the server registers it (src/api/*_routes.cc; /openapi.json lists the same), in order.
ROUTES = [("GET", "/healthz", "healthz"), ("GET", "/readyz", "readyz"), ("GET", "/metrics", "metrics"),
          ("GET", "/openapi.json", "openapi")]
_SESSION_SUFFIXES = [("POST", "code/execute", "execute"), ("POST", "execute", "execute"),
                     ("POST", "python/execute", "python.execute"), ("POST", "executions", "executions.post"),
                     ("GET", "executions/{id}", "executions.get"), ("GET", "session", "session.get"),
                     ("DELETE", "session", "session.delete"), ("GET", "listSessions", "listSessions"),
                     ("POST", ".management/getSession", "mgmt.getSession"),
                     ("POST", ".management/listSessions", "mgmt.listSessions"),
                     ("POST", ".management/stopSession", "mgmt.stopSession"), ("GET", "metadata", "metadata")]
_FILE_SUFFIXES = [("POST", "files/upload", "files.upload"), ("POST", "files", "files.post"),
                  ("GET", "files", "files.list"), ("GET", "files/content/{name...}", "files.content"),
                  ("GET", "files/{name}/content", "files.content"), ("GET", "files/{name}", "files.get"),
                  ("DELETE", "files/{name}", "files.delete")]
for _base in ("/pools/{pool}/", "/"):
    ROUTES += [(m, _base + s, k) for m, s, k in _SESSION_SUFFIXES]
ROUTES += [("GET", "/pools", "pools.list"), ("POST", "/pools", "pools.create"), ("GET", "/pools/{pool}", "pools.get"),
           ("PUT", "/pools/{pool}", "pools.update"), ("PATCH", "/pools/{pool}", "pools.update"),
           ("DELETE", "/pools/{pool}", "pools.delete")]
for _base in ("/pools/{pool}/", "/"):
    ROUTES += [(m, _base + s, k) for m, s, k in _FILE_SUFFIXES]
NO_AUTH_ROUTES = {"healthz", "readyz", "metrics", "openapi"}
NAME_ROUTES = {"files.list", "files.content", "files.get", "files.delete"}  # a name or path in the target
IDENT_ROUTES = {"execute", "python.execute", "executions.post", "executions.get", "session.get", "session.delete",
                "mgmt.getSession", "mgmt.stopSession", "files.upload", "files.post", "files.list", "files.content",
                "files.get", "files.delete"}

ID_CHARS = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789|-&^%$#(){}[];<>_:.@~"
SANITIZER_RE = re.compile(rb"ERROR: (AddressSanitizer|LeakSanitizer|UndefinedBehaviorSanitizer)|runtime error:|"
                          rb"SUMMARY: (Address|Leak|UndefinedBehavior)Sanitizer|==\d+==ERROR")
STATUS_RE = re.compile(rb"^HTTP/1\.1 ([1-5][0-9][0-9]) ([\x20-\x7e]*)$")
HEADER_RE = re.compile(rb"^([!#$%&'*+.^_`|~0-9A-Za-z-]+):[ \t]*([\x20-\x7e\t]*?)[ \t]*$")
METRIC_LINE_RE = re.compile(r'^(# (HELP|TYPE) \w+ .+|\w+(\{(\w+="([^"\\\n]|\\.)*",?)*\})? ([-+0-9.e]+|NaN|[-+]Inf))$')


def match_pattern(pattern, path):
    """Mirror of Router::match_pattern: literal segments, {x} one non-empty segment, {x...} the non-empty rest."""
    if not path.startswith("/"):
        return False
    pseg, seg = pattern[1:].split("/"), path[1:].split("/")
    for i, p in enumerate(pseg):
        if p.startswith("{") and p.endswith("...}"):
            rest = "/".join(seg[i:])
            return i < len(seg) and rest != ""
        if i >= len(seg):
            return False
        if p.startswith("{") and p.endswith("}"):
            if seg[i] == "":
                return False
        elif p != seg[i]:
            return False
    return len(seg) == len(pseg)


def route_of(method, target):
    """(kind, key, pattern): kind 'found' | 'bad_method' | 'not_found' for a request as the server routes it."""
    path = target.split("?", 1)[0]
    other = False
    for m, pattern, key in ROUTES:
        if not match_pattern(pattern, path):
            continue
        if m == method or (method == "HEAD" and m == "GET"):
            return "found", key, pattern
        other = True
    return ("bad_method", None, None) if other else ("not_found", None, None)


def pct_decode(s):
    """API.md's percent-decoding: None when an escape is malformed."""
    out = bytearray()
    i = 0
    b = s.encode("latin-1") if isinstance(s, str) else s
    while i < len(b):
        c = b[i]
        if c == 0x25:
            h = b[i + 1:i + 3]
            if len(h) < 2 or not all(x in b"0123456789abcdefABCDEF" for x in h):
                return None
            out.append(int(h, 16))
            i += 3
        else:
            out.append(c)
            i += 1
    return bytes(out)


def identifier_ok(decoded):
    return decoded is not None and 4 <= len(decoded) <= 128 and all(chr(c) in ID_CHARS for c in decoded)


def file_name_ok(decoded, allow_root=False):
    """API.md §4 on a decoded name: no '..' component, no NUL, not absolute after /mnt/data, <= 255 a component."""
    if decoded is None:
        return False
    if decoded == b"/mnt/data":
        decoded = b""
    if decoded.startswith(b"/mnt/data/"):
        decoded = decoded[10:]
    if decoded.startswith(b"/") or b"\0" in decoded:
        return False
    comps = decoded.split(b"/")
    if any(c == b".." or len(c) > 255 for c in comps):
        return False
    if len(decoded) > 4096:
        return None  # over PATH_MAX: the contract does not say; either answer is fine
    if not allow_root and all(c in (b"", b".") for c in comps):
        return False
    return True


def query_first(query, name):
    """The raw value of the first `name=` in a query string, None when absent."""
    for pair in query.split("&"):
        k, eq, v = pair.partition("=")
        if k == name:
            return v
    return None


def q(s, safe=""):
    return urllib.parse.quote(s, safe=safe) if isinstance(s, str) else urllib.parse.quote_from_bytes(s, safe=safe)


# ---------------------------------------------------------------------------------------------------------------
# HTTP: requests as bytes, and a strict reader of responses.
# ---------------------------------------------------------------------------------------------------------------
class Timeout(Exception):
    pass


class Closed(Exception):
    pass


class Malformed(Exception):
    pass


class Response:
    def __init__(self, status, reason, headers, body=b"", raw_head=b""):
        self.status, self.reason, self.headers, self.body, self.raw_head = status, reason, headers, body, raw_head
        self.elapsed = 0.0
        self.until_eof = False

    def header(self, name):
        name = name.lower()
        for k, v in self.headers:
            if k.lower() == name:
                return v
        return None

    def headers_named(self, name):
        return [v for k, v in self.headers if k.lower() == name.lower()]

    def summary(self):
        return "%d %s %r" % (self.status, self.reason, self.body[:300])


class Reader:
    def __init__(self, sock):
        self.sock = sock
        self.buf = bytearray()
        self.eof = False
        self.reset = False

    def fill(self, deadline):
        if self.eof:
            return False
        left = deadline - time.monotonic()
        if left <= 0:
            raise Timeout()
        self.sock.settimeout(left)
        try:
            data = self.sock.recv(1 << 16)
        except socket.timeout:
            raise Timeout()
        except (ConnectionResetError, BrokenPipeError):
            self.eof = self.reset = True
            return False
        if not data:
            self.eof = True
            return False
        self.buf += data
        return True

    def read_exact(self, n, deadline):
        while len(self.buf) < n:
            if not self.fill(deadline):
                raise Malformed("connection closed %d bytes into a %d-byte body" % (len(self.buf), n))
        out = bytes(self.buf[:n])
        del self.buf[:n]
        return out

    def read_line(self, deadline, limit=8192):
        while b"\r\n" not in self.buf:
            if len(self.buf) > limit:
                raise Malformed("chunk line over %d bytes" % limit)
            if not self.fill(deadline):
                raise Malformed("connection closed inside a chunked body")
        i = self.buf.index(b"\r\n")
        line = bytes(self.buf[:i])
        del self.buf[:i + 2]
        return line

    def read_response(self, head_request, deadline):
        """The next response (1xx interim ones included). Raises Closed when the connection ends before any byte of
        it, Timeout, or Malformed."""
        while True:
            i = self.buf.find(b"\r\n\r\n")
            if i >= 0:
                break
            if len(self.buf) > 256 * 1024:
                raise Malformed("response head over 256 KiB")
            if not self.fill(deadline):
                if self.buf:
                    raise Malformed("connection closed inside a response head: %r" % bytes(self.buf[:300]))
                raise Closed()
        raw_head = bytes(self.buf[:i])
        del self.buf[:i + 4]
        lines = raw_head.split(b"\r\n")
        m = STATUS_RE.match(lines[0])
        if not m:
            raise Malformed("bad status line %r" % lines[0][:200])
        headers = []
        for line in lines[1:]:
            hm = HEADER_RE.match(line)
            if not hm:
                raise Malformed("bad header line %r" % line[:200])
            headers.append((hm.group(1).decode(), hm.group(2).decode("latin-1")))
        r = Response(int(m.group(1)), m.group(2).decode(), headers, raw_head=raw_head)
        lengths = r.headers_named("Content-Length")
        te = r.header("Transfer-Encoding")
        if len(lengths) > 1:
            raise Malformed("%d Content-Length headers" % len(lengths))
        if lengths and not re.fullmatch(r"[0-9]{1,15}", lengths[0]):
            raise Malformed("bad Content-Length %r" % lengths[0])
        if lengths and te:
            raise Malformed("both Content-Length and Transfer-Encoding")
        if r.status < 200 or r.status in (204, 304):
            if (lengths and int(lengths[0]) != 0) or te:
                raise Malformed("%d with a body (Content-Length %s, Transfer-Encoding %s)" % (r.status, lengths, te))
            return r
        if head_request:
            return r
        if te is not None:
            if te.lower() != "chunked":
                raise Malformed("Transfer-Encoding %r" % te)
            body = bytearray()
            while True:
                line = self.read_line(deadline)
                sm = re.fullmatch(rb"([0-9a-fA-F]{1,15})(;.*)?", line)
                if not sm:
                    raise Malformed("bad chunk size line %r" % line[:100])
                n = int(sm.group(1), 16)
                if n == 0:
                    while self.read_line(deadline) != b"":
                        pass
                    break
                body += self.read_exact(n, deadline)
                if self.read_exact(2, deadline) != b"\r\n":
                    raise Malformed("chunk not followed by CRLF")
            r.body = bytes(body)
            return r
        if lengths:
            r.body = self.read_exact(int(lengths[0]), deadline)
            return r
        # No framing: the body ends with the connection (only for HTTP/1.0 streams).
        while self.fill(deadline):
            pass
        r.body = bytes(self.buf)
        self.buf.clear()
        r.until_eof = True
        return r


def chunk_body(rng, body, ext=False, trailers=False):
    out = bytearray()
    i = 0
    while i < len(body):
        n = rng.randint(1, max(1, min(len(body) - i, rng.choice([1, 7, 100, 4096, 70000]))))
        size = b"%x" % n
        if rng.random() < 0.2:
            size = size.upper()
        out += size + (b";name=val" if ext and rng.random() < 0.5 else b"") + b"\r\n" + body[i:i + n] + b"\r\n"
        i += n
    out += b"0\r\n" + (b"X-Trailer: t\r\n" if trailers else b"") + b"\r\n"
    return bytes(out)


class Req:
    """One request: its bytes and what may come back."""

    def __init__(self, method, target, headers=None, body=b"", *, version="HTTP/1.1", framing="cl", rng=None,
                 key=None, allowed=None, check=None, bound=BOUND_S, note=""):
        self.method, self.target, self.body, self.version = method, target, body, version
        self.headers = list(headers or [])
        self.framing = framing  # "cl", "chunked", "none"
        self.rng = rng
        self.key = key  # route key for the stats
        self.allowed = allowed
        self.check = check
        self.bound = bound
        self.note = note
        self._raw = None

    @property
    def head(self):
        return self.method == "HEAD"

    def raw(self):
        if self._raw is not None:
            return self._raw
        target = self.target.encode("latin-1") if isinstance(self.target, str) else self.target
        method = self.method.encode("latin-1") if isinstance(self.method, str) else self.method
        lines = [method + b" " + target + b" " + self.version.encode()]
        hdrs = list(self.headers)
        body = self.body
        if self.framing == "cl" and (body or self.method in ("POST", "PUT", "PATCH")):
            hdrs.append(("Content-Length", str(len(body))))
        elif self.framing == "chunked":
            hdrs.append(("Transfer-Encoding", "chunked"))
            body = chunk_body(self.rng or random, body, ext=True, trailers=(self.rng or random).random() < 0.2)
        for k, v in hdrs:
            k = k.encode("latin-1") if isinstance(k, str) else k
            v = v.encode("latin-1") if isinstance(v, str) else v
            lines.append(k + b": " + v)
        self._raw = b"\r\n".join(lines) + b"\r\n\r\n" + body
        return self._raw

    def set_raw(self, data):
        self._raw = data


# ---------------------------------------------------------------------------------------------------------------
# Bodies: JSON values and their mutations, multipart, pool settings.
# ---------------------------------------------------------------------------------------------------------------
WEIRD_NUMBERS = ["1e999", "-1e999", "1e-999", "-0", "0.0", "18446744073709551616", "18446744073709551615",
                 "-9223372036854775809", "9223372036854775807", "4294967296", "4294967295", "-1", "1.5", "1E+2",
                 "123456789012345678901234567890", "0.000000000000000000000000000001", "2.2250738585072011e-308"]
NAN_LIKE = ["NaN", "-NaN", "Infinity", "-Infinity", "nan", "inf", "\"NaN\"", "\"Infinity\"", "\"nan\"", "0x10",
            "01", "+1", ".5", "1.", "1e", "--1", "undefined", "True", "None", "null", "true", "false"]
WEIRD_STRINGS = ["\"\\ud800\"", "\"\\udfff\\ud800\"", "\"\\u0000\"", "\"a\\u0000b\"", "\"\\uD83D\\uDE00\"",
                 "\"\\x41\"", "\"\\q\"", "\"\t\"", "\"\\/\"", "\"\"", "\"" + "\\\\" * 50 + "\"",
                 "\"" + "é" * 40 + "\"", "\"\\uFFFF\\uFFFE\""]
BAD_UTF8 = [b"\xff", b"\xfe\xff", b"\xc0\x80", b"\xed\xa0\x80", b"\xf4\x90\x80\x80", b"\xe2\x82", b"\x80",
            b"\xf8\x88\x80\x80\x80", b"\xc3"]


def raw_json(v):
    """JSON text of v; v may contain RawJson pieces (weird literals kept as written)."""
    if isinstance(v, RawJson):
        return v.text
    if isinstance(v, dict):
        return "{" + ",".join(json.dumps(k) + ":" + raw_json(x) for k, x in v.items()) + "}"
    if isinstance(v, DupDict):
        return "{" + ",".join(json.dumps(k) + ":" + raw_json(x) for k, x in v.items) + "}"
    if isinstance(v, list):
        return "[" + ",".join(raw_json(x) for x in v) + "]"
    return json.dumps(v)


class RawJson:
    def __init__(self, text):
        self.text = text


class DupDict:
    """An object with repeated keys, in order."""

    def __init__(self, items):
        self.items = items


def rand_scalar(rng):
    r = rng.random()
    if r < 0.2:
        return RawJson(rng.choice(WEIRD_NUMBERS))
    if r < 0.3:
        return RawJson(rng.choice(NAN_LIKE))
    if r < 0.4:
        return RawJson(rng.choice(WEIRD_STRINGS))
    if r < 0.55:
        return rng.choice([0, 1, -1, 7, 2 ** 31, 2 ** 32 + 1, 2 ** 63, 10 ** 20, 0.5, -2.5, 1e300])
    if r < 0.75:
        return rand_text(rng, rng.choice([0, 1, 5, 40, 300]))
    if r < 0.85:
        return rng.choice([True, False, None])
    return rng.choice([[], {}, [1, "a"], {"a": 1}])


def rand_text(rng, n):
    alphabet = "abcXYZ019 _-./\\\"'\n\t%&?#\u00e9\u4e2d\U0001f600\u0000\u202e"
    return "".join(rng.choice(alphabet) for _ in range(n))


def deep(rng, depth):
    kind = rng.random()
    if kind < 0.4:
        return "[" * depth + "1" + "]" * depth
    if kind < 0.8:
        return "{\"a\":" * depth + "1" + "}" * depth
    return "[" * depth  # never closed


def mutate_bytes(rng, data, n=None):
    """Byte-level damage: truncation, bad UTF-8, inserted/deleted/duplicated bytes, control characters."""
    data = bytearray(data)
    for _ in range(n or rng.randint(1, 3)):
        op = rng.random()
        pos = rng.randint(0, len(data)) if data else 0
        if op < 0.25 and data:
            del data[pos:]                                   # truncated
        elif op < 0.45:
            data[pos:pos] = rng.choice(BAD_UTF8)             # invalid UTF-8
        elif op < 0.6:
            data[pos:pos] = bytes([rng.randint(0, 255)])     # a random byte
        elif op < 0.7 and data:
            del data[pos:pos + rng.randint(1, 8)]
        elif op < 0.8 and data:
            end = min(len(data), pos + rng.randint(1, 40))
            data[pos:pos] = data[pos:end] * rng.randint(2, 5)  # duplicated run
        elif op < 0.9:
            data[pos:pos] = rng.choice([b"\x00", b"\r\n", b"\"", b"\\", b"{", b"]", b",", b":", b"\x7f"])
        else:
            data[pos:pos] = b" " * rng.randint(1, 5000)      # lots of whitespace
    return bytes(data)


def python_json_object(data):
    """The top-level object Python finds at the start of `data` (the way simdjson's on-demand parser reads a
    document: a BOM and whitespace skipped, trailing bytes not looked at), or None."""
    text = data.decode("latin-1")
    if text.startswith("\u00ef\u00bb\u00bf"):
        text = text[3:]
    text = text.lstrip(" \t\r\n")
    try:
        obj, _ = json.JSONDecoder().raw_decode(text)
    except (ValueError, RecursionError):
        return None
    return obj


MEMORY_VALUES = ["256Mi", "512Mi", "1Gi", "300Mi", "0.5Gi"]


def safe_settings(rng, name):
    """Valid pool settings small enough for this 2-core machine (Azure's nested shape or flat, at random)."""
    ready = rng.randint(0, 1)
    maxs = rng.randint(max(1, ready), 3)
    ctype = "Shell" if rng.random() < 0.3 else "PythonLTS"
    flat = {"name": name, "containerType": ctype, "maxConcurrentSessions": maxs, "readySessionInstances": ready,
            "cooldownPeriodInSeconds": rng.randint(5, 30)}
    extras = {"executionTimeoutCapInSeconds": rng.randint(1, 10), "allocationWaitInMilliseconds": rng.randint(0, 3000),
              "poolFullStatusCode": rng.choice([404, 429]), "maxUploadBytes": rng.choice([1024, 4096, 1 << 16, 1 << 20]),
              "dataSizeBytes": rng.choice([1 << 20, 4 << 20, 16 << 20]),
              "resources": {"cpu": rng.choice([0.25, 0.5, 1, "0.5"]), "memory": rng.choice(MEMORY_VALUES)},
              "sessionNetworkConfiguration": {"status": "EgressDisabled"}, "isolation": "process"}
    for k, v in extras.items():
        if rng.random() < 0.5:
            flat[k] = v
    if rng.random() < 0.5:
        return flat
    props = {"containerType": flat.pop("containerType"), "poolManagementType": "Dynamic",
             "scaleConfiguration": {"maxConcurrentSessions": flat.pop("maxConcurrentSessions"),
                                    "readySessionInstances": flat.pop("readySessionInstances")},
             "dynamicPoolConfiguration": {"lifecycleConfiguration": {
                 "lifecycleType": "Timed", "cooldownPeriodInSeconds": flat.pop("cooldownPeriodInSeconds")}}}
    for k in list(flat):
        if k != "name":
            props[k] = flat.pop(k)
    return {"name": name, "properties": props}


SETTING_KEYS = ["name", "containerType", "maxConcurrentSessions", "readySessionInstances", "cooldownPeriodInSeconds",
                "executionTimeoutCapInSeconds", "allocationWaitInMilliseconds", "poolFullStatusCode", "maxUploadBytes",
                "dataSizeBytes", "resources", "sessionNetworkConfiguration", "isolation", "lifecycleConfiguration",
                "customContainerTemplate", "image", "command", "args", "env", "probes", "targetPort", "ingress",
                "upstreamTimeoutInSeconds", "properties", "scaleConfiguration", "dynamicPoolConfiguration",
                "poolManagementType", "registryCredentials", "NAME", "name\u0000", ""]


def hostile_settings_value(rng, key):
    r = rng.random()
    if key == "probes" and r < 0.6:
        return [{"type": rng.choice(["Startup", "Liveness", "Readiness", "Bogus", 3]),
                 rng.choice(["tcpSocket", "httpGet", "exec"]): {"port": rand_scalar(rng), "path": rand_scalar(rng),
                                                               "host": "127.0.0.1"},
                 "periodSeconds": rand_scalar(rng)} for _ in range(rng.randint(0, 3))]
    if key == "env" and r < 0.6:
        return [{"name": rand_scalar(rng), "value": rand_scalar(rng)} for _ in range(rng.randint(0, 300))]
    if key in ("command", "args") and r < 0.6:
        return [rand_scalar(rng) for _ in range(rng.randint(0, 300))]
    if key in ("properties", "scaleConfiguration", "dynamicPoolConfiguration", "lifecycleConfiguration",
               "customContainerTemplate", "resources", "sessionNetworkConfiguration", "ingress") and r < 0.6:
        return {rng.choice(SETTING_KEYS + ["cpu", "memory", "status", "lifecycleType", "containers", "targetPort"]):
                rand_scalar(rng) for _ in range(rng.randint(0, 4))}
    if key == "resources" and r < 0.8:
        return {"cpu": RawJson(rng.choice(["0", "-1", "1e999", "\"abc\"", "\"1e-999\"", "65", "0.04", "NaN"])),
                "memory": rng.choice(["2Gi", "0Mi", "1Ti", "63Mi", "1e3Gi", "Gi", "-1Gi", "1.5Gi", "9999999999999Gi",
                                      "nanGi", "infMi", "0x10Gi", 5])}
    return rand_scalar(rng)


def hostile_settings(rng, name):
    """Settings JSON text that is wrong somewhere, always ending with the POISON field (never valid)."""
    base = safe_settings(rng, name)
    if rng.random() < 0.5:
        base = {"name": name}
    items = list(base.items())
    for _ in range(rng.randint(0, 5)):
        k = rng.choice(SETTING_KEYS)
        items.insert(rng.randint(0, len(items)), (k, hostile_settings_value(rng, k)))
    if rng.random() < 0.15:
        # Wrappers nested beyond what is accepted.
        inner = {"maxConcurrentSessions": 2}
        for _ in range(rng.randint(2, 8)):
            inner = {rng.choice(["properties", "scaleConfiguration", "dynamicPoolConfiguration"]): inner}
        items.append(("properties", inner))
    if rng.random() < 0.1:
        items.append(("properties", RawJson(deep(rng, rng.choice([50, 1000, 5000])))))
    items.append((POISON, rng.choice([1, "x", None])))
    return raw_json(DupDict(items)).encode("utf-8", "surrogatepass")


def poisoned_ok(data):
    """True when `data` cannot be a valid settings body: not a JSON object, or one carrying the POISON field."""
    obj = python_json_object(data)
    return not isinstance(obj, dict) or POISON in obj


def multipart(rng, parts, boundary=None, closing=True, preamble=b"", epilogue=b""):
    boundary = boundary or ("----fz" + "".join(rng.choice("abcdefXYZ0123456789'()+_,-./:=?") for _ in range(rng.randint(1, 40))))
    b = boundary.encode("latin-1") if isinstance(boundary, str) else boundary
    out = bytearray(preamble)
    for headers, data in parts:
        out += b"--" + b + b"\r\n" + headers + b"\r\n\r\n" + data + b"\r\n"
    if closing:
        out += b"--" + b + b"--\r\n" + epilogue
    return boundary, bytes(out)


def disposition(name, filename=None):
    d = b'Content-Disposition: form-data; name="' + name + b'"'
    if filename is not None:
        d += b'; filename="' + filename + b'"'
    return d


# ---------------------------------------------------------------------------------------------------------------
# Checks of successful answers' shapes (API.md §2-§3).
# ---------------------------------------------------------------------------------------------------------------
def load_json(body):
    def no_const(c):
        raise ValueError("non-standard JSON constant " + c)
    return json.loads(body.decode("utf-8"), parse_constant=no_const)


def need(d, keys, what):
    missing = [k for k in keys if k not in d]
    return ["%s lacks %s" % (what, ", ".join(missing))] if missing else []


def check_envelope(j, shell=False):
    p = j.get("properties", {})
    errs = need(j, ["$id", "properties"], "envelope B") + need(p, ["$id", "status", "stdout", "stderr", "result",
                                                                   "executionResult", "executionTimeInMilliseconds"],
                                                               "envelope B properties")
    if not errs:
        if p["status"] not in ("Success", "Failure"):
            errs.append("envelope status %r" % p["status"])
        if p["result"] != p["executionResult"]:
            errs.append("result != executionResult")
        if j["$id"] != "1" or p["$id"] != "2":
            errs.append("$id values %r %r" % (j["$id"], p["$id"]))
    return errs


def check_legacy(j):
    return need(j, ["result", "stdout", "stderr"], "python/execute body")


def check_resource(j):
    errs = need(j, ["id", "identifier", "sessionId", "executionType", "status", "result"], "execution resource")
    if not errs:
        st = j["status"]
        if st not in ("Succeeded", "Failed", "Running", "NotStarted", "Canceled") and not re.fullmatch(r"-?\d+", st):
            errs.append("execution status %r" % st)
        if st != "Running" and not isinstance(j["result"], dict):
            errs.append("finished execution without a result object")
    return errs


SESSION_KEYS = ["identifier", "createdAt", "lastAccessedAt", "expireAt", "expiresAt", "etag", "state"]
FILE_ITEM_KEYS = ["$id", "properties", "name", "type", "contentType", "sizeInBytes", "lastModifiedAt", "directory"]


def check_file_item(j):
    errs = need(j, FILE_ITEM_KEYS, "file item")
    if not errs:
        errs += need(j["properties"], ["$id", "filename", "size", "lastModifiedTime", "last_modified_time"], "file item properties")
        if j["type"] not in ("File", "Directory"):
            errs.append("file type %r" % j["type"])
    return errs


def check_files_list(j):
    errs = need(j, ["$id", "value", "nextLink"], "files list")
    for item in j.get("value", [])[:50]:
        errs += check_file_item(item)
    return errs


def check_session_list(j, management):
    if management:
        errs = need(j, ["value", "count", "nextLink"], "management session list")
        items = j.get("value", [])
    else:
        errs = need(j, ["sessions", "nextLink"], "session list")
        items = j.get("sessions", [])
    for s in items[:50]:
        errs += need(s, SESSION_KEYS, "session object")
    return errs


def check_pool(j):
    return need(j, ["name", "containerType", "maxConcurrentSessions", "readySessionInstances", "provisioningState"], "pool")


# ---------------------------------------------------------------------------------------------------------------
# The fuzzer.
# ---------------------------------------------------------------------------------------------------------------
class FzSocket(socket.socket):
    """A socket that remembers the bytes sent on it (for the findings)."""


class Finding:
    def __init__(self, kind, route, detail, sent, response=None, case=0):
        self.kind, self.route, self.detail, self.sent, self.response, self.case = kind, route, detail, sent, response, case


class Fuzzer:
    def __init__(self, args):
        self.args = args
        self.rng = random.Random(args.seed)
        self.binary = os.path.join(args.build_dir, "src", "sandpool")
        self.pool_mode = args.pool
        self.auth = args.auth
        self.stats_route = collections.Counter()
        self.stats_status = collections.Counter()
        self.stats_route_status = collections.Counter()
        self.case_kinds = collections.Counter()
        self.findings = []
        self.known = collections.Counter()
        self.known_examples = {}
        self.finding_keys = collections.Counter()
        self.requests = 0
        self.case_no = 0
        self.case_sent = []  # the bytes sent in the current case, per connection
        self.recent_cases = collections.deque(maxlen=4)
        self.held = []  # connections left mid-request until the server stops
        self.keepalive = []  # (sock, reader, last_used)
        # What the fuzzer knows of the server's state.
        self.pools = {}  # name -> True (exists) / False / None (unknown)
        self.ids = {}  # pool -> identifiers in use
        self.files = collections.defaultdict(dict)  # (pool, id) -> {name: bytes}
        self.executions = []  # (pool, id, exec id)
        self.rss = []  # (t, kB)
        self.stderr_pos = 0
        self.stderr_tail = b""
        self.pool_types = {}  # fuzz pool -> containerType
        self.allowed_5xx = collections.Counter()  # (route, status, code, why) of 5xx answers the case allowed
        self.srv = None
        self.pid = None
        self.asan = False
        self.stop_reason = None

    # ---- server ----
    def start(self):
        flags = ["--header-timeout-ms", str(HEADER_TIMEOUT_MS), "--idle-timeout-ms", str(IDLE_TIMEOUT_MS)]
        if self.auth:
            flags += ["--api-key", API_KEY]
        # The access log reads each request's fields after its answer, protocol errors included.
        self.access_log = tempfile.NamedTemporaryFile(prefix="api-fuzz-access-", suffix=".log", delete=False).name
        flags += ["--access-log", self.access_log]
        if self.pool_mode:
            flags += ["--pool-type", "PythonLTS", "--pool-ready", "2", "--pool-max", "8", "--pool-cooldown", "20"]
        self.srv = harness.Server(*flags, binary=self.binary, pools=self.pool_mode)
        t0 = time.monotonic()
        self.srv.start()
        self.pid = self.srv.proc.pid
        with open("/proc/%d/maps" % self.pid) as f:
            self.asan = "libasan" in f.read()
        self.port = self.srv.port
        self.pools = {"default": self.pool_mode}
        for n in FUZZ_POOLS:
            self.pools[n] = False
        self.ids = {"default": ["fuzz-%d" % i for i in range(5)] + ["a|b{c}[d]^e~f"]}
        for n in FUZZ_POOLS:
            self.ids[n] = ["fz-%d" % i for i in range(3)]
        self.log("server pid %d on port %d (%s, %s), started in %.1f s" % (
            self.pid, self.port, "ASan/UBSan" if self.asan else "release", "pool" if self.pool_mode else "no pool",
            time.monotonic() - t0))

    def log(self, msg):
        print("[api_fuzz %7.1fs] %s" % (time.monotonic() - self.t_start, msg), flush=True)

    def alive(self):
        return self.srv.proc.poll() is None

    def new_stderr(self):
        try:
            with open(self.srv.stderr_path, "rb") as f:
                f.seek(self.stderr_pos)
                data = f.read()
        except OSError:
            return b""
        self.stderr_pos += len(data)
        self.stderr_tail = (self.stderr_tail + data)[-200000:]
        return data

    def proc_counts(self):
        try:
            fds = len(os.listdir("/proc/%d/fd" % self.pid))
            threads = len(os.listdir("/proc/%d/task" % self.pid))
            rss = 0
            with open("/proc/%d/status" % self.pid) as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        rss = int(line.split()[1])
            return fds, threads, rss
        except OSError:
            return None

    # ---- connections ----
    def connect(self):
        s = FzSocket(socket.AF_INET, socket.SOCK_STREAM)
        s.settimeout(5)
        try:
            s.connect(("127.0.0.1", self.port))
        except OSError:
            s.close()
            raise
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.case_sent.append(bytearray())
        s._fz_log = self.case_sent[-1]
        return s

    def send(self, s, data):
        s._fz_log.extend(data)
        s.settimeout(5)
        s.sendall(data)

    def rst(self, s):
        try:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        except OSError:
            pass
        s.close()

    def auth_headers(self, ok=True):
        if not self.auth:
            return []
        if ok:
            return [("Authorization", "Bearer " + API_KEY)]
        return self.rng.choice([[], [("Authorization", "Bearer wrong")], [("Authorization", "Basic " + API_KEY)],
                                [("Authorization", "Bearer " + API_KEY + "x")], [("Authorization", "Bearer ")],
                                [("Authorization", "bearer " + API_KEY[:-1])]])

    # ---- findings ----
    def finding(self, kind, route, detail, response=None):
        key = self.finding_key(kind, route, detail)
        self.finding_keys[key] += 1
        if self.finding_keys[key] > 3:
            return
        sent = [bytes(b) for b in self.case_sent]
        f = Finding(kind, route, detail, sent, response.summary() if response else None, self.case_no)
        self.findings.append(f)
        self.log("FINDING [%s] %s: %s; sent %s" % (kind, route, detail, self.fmt_sent(sent, 300)))

    @staticmethod
    def finding_key(kind, route, detail):
        return (kind, route, detail.split(" for ")[0] if kind == "status" else re.sub(r"\d+", "N", detail[:60]))

    def known_deviation(self, key, r, why):
        self.known[key] += 1
        if key not in self.known_examples:
            self.known_examples[key] = ([bytes(b) for b in self.case_sent], r.summary(), why)

    @staticmethod
    def fmt_sent(sent, limit=2048):
        parts = []
        for b in sent:
            if len(b) > limit:
                parts.append("%r... (%d bytes, sha256 %s)" % (b[:limit], len(b), hashlib.sha256(b).hexdigest()[:16]))
            else:
                parts.append(repr(b))
        return " | ".join(parts) if parts else "(nothing)"

    # ---- checking one answer ----
    def count(self, req, r):
        label = req.key or "?"
        st = r.status if r is not None else "none"
        self.stats_route[label] += 1
        self.stats_status[st] += 1
        self.stats_route_status[(label, st)] += 1

    def check_response(self, req, r, elapsed):
        """All checks of one answer to a request of known route and expectation."""
        label = req.key or "?"
        if r.status < 200:
            self.finding("protocol", label, "unexpected interim %d" % r.status, r)
            return
        if not r.header("Date"):
            self.finding("protocol", label, "no Date header", r)
        if r.until_eof and req.version != "HTTP/1.0":
            self.finding("protocol", label, "body delimited by the connection's end in an HTTP/1.1 answer", r)
        code = None
        if r.status >= 400:
            code = r.header("x-ms-error-code")
            if not req.head:
                try:
                    j = load_json(r.body)
                    if set(j) != {"error"} or set(j["error"]) != {"code", "message", "traceId"}:
                        raise ValueError("keys %r" % (list(j),))
                    for k in ("code", "message", "traceId"):
                        if not isinstance(j["error"][k], str):
                            raise ValueError("%s is not a string" % k)
                    if j["error"]["code"] != code:
                        self.finding("error-body", label, "x-ms-error-code %r but body code %r" % (code, j["error"]["code"]), r)
                    code = j["error"]["code"]
                    if not (r.header("Content-Type") or "").startswith("application/json"):
                        self.finding("error-body", label, "error with Content-Type %r" % r.header("Content-Type"), r)
                except (ValueError, UnicodeDecodeError, AttributeError, TypeError) as e:
                    self.finding("error-body", label, "%d answer without the Azure error body (%s)" % (r.status, e), r)
            elif code is None:
                self.finding("error-body", label, "%d answer to HEAD without x-ms-error-code" % r.status, r)
            if r.status == 405 and not r.header("Allow"):
                self.finding("protocol", label, "405 without Allow", r)
            if (r.status, code) in ((429, "SessionPoolFull"), (429, "ExecutionQueueFull")) and not r.header("Retry-After"):
                self.finding("protocol", label, "%d %s without Retry-After" % (r.status, code), r)
        allowed = req.allowed
        if allowed is not None and (r.status, code) not in allowed:
            kkey = (req.key, r.status, code)
            if kkey in KNOWN and "known:" + kkey[0] in req.note:
                self.known_deviation(kkey, r, KNOWN[kkey])
            else:
                kind = "500" if r.status >= 500 else "status"
                exp = ", ".join("%d %s" % (s, c or "") for s, c in sorted(allowed, key=lambda x: (x[0], x[1] or "")))
                self.finding(kind, label, "got %d %s for %s %s; allowed: %s%s" % (
                    r.status, code or "", req.method if isinstance(req.method, str) else repr(req.method),
                    req.target[:120] if isinstance(req.target, str) else repr(req.target[:120]), exp,
                    (" (" + req.note + ")") if req.note else ""), r)
        if r.status >= 500 and allowed is not None and (r.status, code) in allowed:
            self.allowed_5xx[(label, r.status, code, req.note)] += 1
        if elapsed > req.bound:
            self.finding("slow", label, "answer took %.1f s (bound %.0f s)" % (elapsed, req.bound), r)
        if 200 <= r.status < 300 and req.check and not req.head:
            try:
                errs = req.check(r)
            except (ValueError, UnicodeDecodeError, KeyError, TypeError, AttributeError) as e:
                errs = ["body: %s: %r" % (e, r.body[:200])]
            for e in errs or []:
                self.finding("shape", label, e, r)

    def check_any(self, r, label):
        """Checks of an answer to bytes whose route is unknown (garbage, mutated framing)."""
        if r.status < 200:
            return
        code = r.header("x-ms-error-code")
        if r.status >= 400 and r.body:
            try:
                j = load_json(r.body)
                code = j["error"]["code"]
                if set(j["error"]) != {"code", "message", "traceId"}:
                    raise ValueError("keys")
            except (ValueError, UnicodeDecodeError, KeyError, TypeError) as e:
                self.finding("error-body", label, "%d answer without the Azure error body (%s)" % (r.status, e), r)
        if not r.header("Date"):
            self.finding("protocol", label, "no Date header", r)
        if r.status >= 500 or (r.status >= 400 and (r.status, code) not in ANY_ROUTE):
            self.finding("500" if r.status >= 500 else "status", label, "got %d %s to mutated bytes" % (r.status, code), r)

    # ---- expectations ----
    def pool_of_target(self, key, target):
        path = target.split("?", 1)[0]
        if key.startswith("pools.") and key not in ("pools.list", "pools.create"):
            return path.split("/")[2]
        if path.startswith("/pools/"):
            return path.split("/")[2]
        return "default"

    def expectation(self, method, target, *, auth_ok=True, ident_ok="auto", name_ok=None, body_ok=None,
                    body_code="InvalidRequestBody", mutated=False, extra=()):
        """The allowed (status, code) set of a request, narrowed by what is known of its input."""
        kind, key, _ = route_of(method, target)
        proto = set(PROTO) if mutated else set()
        if kind == "not_found":
            return key, UNROUTED | proto | set(extra)
        if kind == "bad_method":
            return key, BAD_METHOD | proto | set(extra)
        allowed = set(ALLOWED[key])
        if key in ("listSessions", "mgmt.listSessions"):
            # README: a skip (the first one) that is not a whole number below 2^64 is 400 InvalidQueryParameter
            # (whatever made the request: the list case, a mutation, a framing variant).
            skips = [p[len("skip="):] for p in target.partition("?")[2].split("&") if p.startswith("skip=")]
            if skips and not (skips[0].isdigit() and skips[0].isascii() and int(skips[0]) < 1 << 64):
                allowed = (allowed - {(200, None)}) | {(400, "InvalidQueryParameter")}
        if key in ("files.upload", "files.post"):
            proto = {(s, "FileTooLarge" if s == 413 else c) for s, c in proto}
        if self.auth and key not in NO_AUTH_ROUTES:
            if not auth_ok:
                return key, {U} | proto | set(extra)
            allowed.discard(U)
        query = target.split("?", 1)[1] if "?" in target else ""
        if ident_ok == "auto":
            ident_ok = None
            if key in IDENT_ROUTES:
                n = len([p for p in query.split("&") if p.partition("=")[0] == "identifier"])
                if n == 0:
                    ident_ok = False
                elif n == 1:
                    ident_ok = identifier_ok(pct_decode(query_first(query, "identifier")))
        pool = self.pool_of_target(key, target)
        exists = self.pools.get(pool, False) if key not in ("pools.list", "pools.create", "healthz", "readyz",
                                                            "metrics", "openapi") else None
        if key in ("pools.get", "pools.update", "pools.delete") and pool == "default" and not self.pool_mode:
            exists = False
        bad = []
        if ident_ok is False and key in IDENT_ROUTES:
            bad.append("InvalidIdentifier")
        if name_ok is False:
            bad.append("InvalidFileName")
        if body_ok is False:
            bad.append(body_code)
        if exists is False and key != "pools.create":
            if key in ("pools.get", "pools.update", "pools.delete"):
                return key, {(404, "PoolNotFound")} | proto | set(extra)
            # A missing pool and an invalid name are both the client's: either may be reported first.
            name_first = {(400, "InvalidFileName")} if key in NAME_ROUTES and name_ok is not True else set()
            return key, {(404, "PoolNotFound")} | name_first | proto | set(extra)
        if exists is True:
            allowed.discard((404, "PoolNotFound"))
        # An upload over the pool's limit is refused from its head (413), before its query or body is looked at.
        too_large = {(413, "FileTooLarge")} if key in ("files.upload", "files.post") else set()
        if bad:
            if key == "pools.update" and exists is not True:
                return key, {(400, c) for c in bad} | {(404, "PoolNotFound"), (409, "PoolBeingCreated")} | proto | set(extra)
            # An upload's session is bound from its head (the body streams to it); its body (and the file name in
            # it) is judged afterwards: a full pool may be reported first.
            alloc_first = ALLOC if key in ("files.upload", "files.post") and ident_ok is not False else set()
            return key, {(400, c) for c in bad} | too_large | alloc_first | proto | set(extra)
        if ident_ok is True:
            allowed.discard((400, "InvalidIdentifier"))
        if name_ok is True:
            allowed.discard((400, "InvalidFileName"))
        if body_ok is True:
            allowed.discard((400, body_code))
        return key, allowed | proto | set(extra)

    def make(self, method, target, headers=None, body=b"", *, auth_ok=True, ident_ok="auto", name_ok=None,
             body_ok=None, body_code="InvalidRequestBody", mutated=False, extra=(), check=None, bound=None,
             framing="cl", version="HTTP/1.1", note="", add_auth=True, host=True):
        key, allowed = self.expectation(method, target, auth_ok=auth_ok, ident_ok=ident_ok, name_ok=name_ok,
                                        body_ok=body_ok, body_code=body_code, mutated=mutated, extra=extra)
        if key is None:
            label = "(unrouted %s)" % ("405" if (405, "MethodNotAllowed") in allowed else "404")
        else:
            label = key
        hdrs = ([("Host", "127.0.0.1:%d" % self.port)] if host else [])
        if add_auth:
            hdrs += self.auth_headers(auth_ok)
        hdrs += list(headers or [])
        if bound is None:
            bound = BOUND_S
            if key in ("execute", "python.execute", "executions.post"):
                bound = EXEC_BOUND_S
            elif key == "pools.create":
                bound = CREATE_BOUND_S
            elif self.pool_mode and key in IDENT_ROUTES:
                bound = EXEC_BOUND_S  # waits for the session's queue (an execution) or for an allocation
        return Req(method, target, hdrs, body, version=version, framing=framing, rng=self.rng, key=label,
                   allowed=allowed, check=check, bound=bound, note=note)

    # ---- running requests ----
    def exchange(self, reqs, mode="plain"):
        """Sends requests on one connection (pipelined when mode == 'pipeline') and checks each answer in order.
        Returns the answers (None where there was none)."""
        out = []
        try:
            s = self.connect()
        except OSError as e:
            self.finding("connect", reqs[0].key, "cannot connect: %s" % e)
            return [None] * len(reqs)
        reader = Reader(s)

        def send(fn, *a):
            # The server may answer an error before the whole request is sent and stop reading (a 413 at the
            # head): a failed send is not a finding by itself; the answer is read all the same.
            try:
                fn(*a)
            except OSError:
                pass

        try:
            if mode == "warm" or (mode == "plain" and self.rng.random() < 0.3):
                # First an ordinary request on the same connection: what the server kept of it must not leak into
                # the next one (keep-alive state).
                self.warm_up(s, reader)
                mode = "plain"
            if mode == "pipeline":
                data = b"".join(r.raw() for r in reqs)
                send(self.send_split if self.rng.random() < 0.5 else self.send, s, data)
                if self.rng.random() < 0.3:
                    send(s.shutdown, socket.SHUT_WR)
                t0 = time.monotonic()
                for i, req in enumerate(reqs):
                    r = self.read_one(reader, req, t0)
                    t0 = time.monotonic()
                    out.append(r)
                    if r is None or (r.header("Connection") or "").lower() == "close":
                        out += [None] * (len(reqs) - i - 1)
                        break
            else:
                for i, req in enumerate(reqs):
                    data = req.raw()
                    if mode == "split":
                        send(self.send_split, s, data)
                    else:
                        send(self.send, s, data)
                    if mode == "halfclose" and i == len(reqs) - 1:
                        send(s.shutdown, socket.SHUT_WR)
                    r = self.read_one(reader, req, time.monotonic())
                    out.append(r)
                    if r is None or (r.header("Connection") or "").lower() == "close":
                        out += [None] * (len(reqs) - i - 1)
                        break
                if mode == "halfclose" and out and out[-1] is not None:
                    self.expect_eof(reader, reqs[-1].key)
        finally:
            s.close()
        return out

    def warm_up(self, s, reader):
        warm = self.make(self.rng.choice(["GET", "GET", "HEAD"]), self.rng.choice(["/healthz", "/metrics", "/readyz",
                                                                                "/openapi.json"]) +
                         "?w=" + "w" * self.rng.choice([0, 10, 100, 1000, 7000]), note="warm-up")
        self.send(s, warm.raw())
        r = self.read_one(reader, warm, time.monotonic())
        if r is None:
            raise ConnectionResetError("warm-up request failed")

    def send_split(self, s, data):
        i = 0
        while i < len(data):
            n = self.rng.choice([1, 2, 3, 7, 64, 1000, 8192])
            self.send(s, data[i:i + n])
            i += n
            if self.rng.random() < 0.05:
                time.sleep(0.002)

    def read_one(self, reader, req, t0):
        deadline = t0 + req.bound + 5
        try:
            while True:
                r = reader.read_response(req.head, deadline)
                if r.status == 100:
                    continue
                break
        except Timeout:
            self.count(req, None)
            self.finding("hang", req.key, "no answer in %.0f s to %s %s" % (req.bound + 5, req.method, str(req.target)[:120]))
            return None
        except Closed:
            self.count(req, None)
            if self.alive():
                self.finding("closed", req.key, "connection closed without an answer to a complete request%s" % (
                    " (reset)" if reader.reset else ""))
            return None
        except Malformed as e:
            self.count(req, None)
            self.finding("malformed", req.key, str(e))
            return None
        r.elapsed = time.monotonic() - t0
        self.requests += 1
        self.count(req, r)
        self.check_response(req, r, r.elapsed)
        return r

    def expect_eof(self, reader, label, timeout=5):
        """After a half-close and the last answer, the server closes its side (it owes nothing more)."""
        deadline = time.monotonic() + timeout
        try:
            while reader.fill(deadline):
                pass
        except Timeout:
            self.finding("protocol", label, "connection still open %d s after a half-closed client's last answer" % timeout)
            return
        if reader.buf:
            self.finding("protocol", label, "bytes after the last answer: %r" % bytes(reader.buf[:200]))

    def read_all(self, s, label, timeout, head=False):
        """Reads answers until the server closes (or `timeout`); checks each loosely. Returns them."""
        reader = Reader(s)
        deadline = time.monotonic() + timeout
        out = []
        while True:
            try:
                r = reader.read_response(head, deadline)
            except Closed:
                break
            except Timeout:
                out.append("timeout")
                break
            except Malformed as e:
                self.finding("malformed", label, str(e))
                break
            if r.status >= 200:
                self.requests += 1
                self.stats_route[label] += 1
                self.stats_status[r.status] += 1
                self.stats_route_status[(label, r.status)] += 1
            self.check_any(r, label)
            out.append(r)
        return out

    # ---- request builders ----
    def pick_pool(self):
        names = [n for n, e in self.pools.items() if e]
        r = self.rng.random()
        if names and r < 0.85:
            return self.rng.choice(names)
        if r < 0.93:
            return self.rng.choice(list(self.pools))
        return self.rng.choice(["nope", "x", "Default", "a" * 63, "fz-z", "pool%20x", "%64efault", "default%00"])

    def prefix(self, pool):
        if pool == "default" and self.rng.random() < 0.5:
            return "/"
        return "/pools/%s/" % pool

    def pick_id(self, pool, fresh=0.05):
        ids = self.ids.get(pool) or ["fuzz-x"]
        if self.rng.random() < fresh:
            ident = "fz" + "".join(self.rng.choice(ID_CHARS) for _ in range(self.rng.randint(2, 40)))
        else:
            ident = self.rng.choice(ids)
        return ident

    def enc_id(self, ident):
        """A valid identifier as a client would put it in the query: fully encoded, or raw when nothing needs it."""
        if self.rng.random() < 0.5 or any(c in ident for c in "&#%+ "):
            return q(ident)
        return ident

    def target(self, pool, suffix, ident=None, extra_query=""):
        t = self.prefix(pool) + suffix
        qs = []
        if ident is not None:
            qs.append("identifier=" + self.enc_id(ident))
        if self.rng.random() < 0.5:
            qs.append("api-version=" + self.rng.choice(["2024-02-02-preview", "2025-02-02-preview", "2024-10-02-preview"]))
        if extra_query:
            qs.append(extra_query)
        self.rng.shuffle(qs)
        return t + ("?" + "&".join(qs) if qs else "")

    def exec_body(self, family, code=None, asynchronous=False, shell=False):
        rng = self.rng
        if shell:
            if rng.random() < 0.5:
                inner = {"shellCommand": code or rng.choice(["echo hi", "ls -la", "cat", "exit 3", "printf '\\xff'",
                                                             "echo $((1+2)) >&2", "seq 1 1000 | wc -l", "true"])}
            else:
                inner = {"execCommandAndArgs": rng.choice([["echo", "a", "b"], ["ls", "/mnt/data"], ["sh", "-c", "exit 7"],
                                                           ["cat"], ["/nonexistent"]])}
            if rng.random() < 0.3:
                inner["stdin"] = rand_text(rng, 20)
        else:
            code = code or rng.choice(PY_SNIPPETS)
            key = "pythonCode" if family == "legacy" and rng.random() < 0.5 else "code"
            inner = {key: code}
        slow = "while True" in (code or "")
        if family == "C":
            inner.update({"codeInputType": rng.choice(["Inline", "inline"]),
                          "executionType": "Asynchronous" if asynchronous else rng.choice(["Synchronous", "synchronous"])})
            if rng.random() < 0.5 or slow:
                inner["timeoutInSeconds"] = rng.choice([1, 2]) if slow else rng.choice([5, 10, 30])
            if rng.random() < 0.3:
                inner["outputStreamsMaxLength"] = rng.choice([1, 10, 4096, 1 << 20])
            body = {"properties": inner} if rng.random() < 0.3 else inner
        else:
            inner.update({"codeInputType": "inline", "executionType": "synchronous"})
            if rng.random() < 0.3 or slow:
                inner["timeoutInSeconds"] = rng.choice([1, 2]) if slow else rng.choice([5, 10])
            body = {"properties": inner} if rng.random() < 0.8 else inner
            if rng.random() < 0.2:
                body["identifier"] = "ignored-in-body"
        return body

    def json_headers(self):
        r = self.rng.random()
        if r < 0.8:
            return [("Content-Type", "application/json")]
        if r < 0.9:
            return [("Content-Type", "application/json; charset=utf-8")]
        return []

    # ---- cases: valid requests ----
    def valid_request(self):
        """A request of the contract's own shapes; returns a Req (not yet sent)."""
        rng = self.rng
        choice = rng.choices(["system", "pools", "execute", "executions", "exec_get", "session", "list", "mgmt",
                              "metadata", "upload", "files_list", "download", "file_get", "file_delete"],
                             [6, 6, 14, 10, 5, 6, 5, 6, 3, 10, 5, 8, 4, 4])[0]
        pool = self.pick_pool()
        shell = pool in FUZZ_POOLS and self.pool_types.get(pool) == "Shell"
        if choice == "system":
            path, check = rng.choice([("/healthz", lambda r: [] if r.body == b"ok\n" else ["healthz body %r" % r.body]),
                                      ("/readyz", lambda r: [] if r.body == b"ready\n" else ["readyz body %r" % r.body]),
                                      ("/metrics", self.check_metrics), ("/openapi.json", self.check_openapi)])
            return self.make(rng.choice(["GET", "GET", "HEAD"]), path, check=check)
        if choice == "pools":
            name = rng.choice(list(self.pools) + ["nope"])
            m = rng.choice(["GET", "GET", "HEAD"])
            if rng.random() < 0.4:
                return self.make(m, "/pools", check=lambda r: [] if isinstance(load_json(r.body).get("value"), list) else ["pools list"])
            return self.make(m, "/pools/" + name, check=lambda r: check_pool(load_json(r.body)))
        if choice == "execute":
            family = rng.choice(["B", "B", "legacy"])
            suffix = "python/execute" if family == "legacy" else rng.choice(["code/execute", "execute"])
            ident = self.pick_id(pool)
            body = self.exec_body(family, shell=shell)
            code = body.get("properties", body).get("code") or body.get("properties", body).get("pythonCode")
            if family == "legacy":
                check = lambda r, c=code: check_legacy(load_json(r.body)) + self.check_result(c, load_json(r.body), "legacy")
            else:
                check = lambda r, c=code: check_envelope(load_json(r.body)) + self.check_result(c, load_json(r.body), "B")
            return self.make("POST", self.target(pool, suffix, ident), self.json_headers(),
                             raw_json(body).encode(), body_ok=True, check=check)
        if choice == "executions":
            ident = self.pick_id(pool)
            asynchronous = rng.random() < 0.4
            body = self.exec_body("C", asynchronous=asynchronous, shell=shell)
            code = None if shell else body.get("properties", body).get("code")
            req = self.make("POST", self.target(pool, "executions", ident), self.json_headers(),
                            raw_json(body).encode(), body_ok=True,
                            check=lambda r, c=code: self.check_exec_post(r) + self.check_result_c(c, load_json(r.body)))
            if asynchronous:
                req.allowed.discard((200, None))
            else:
                req.allowed.discard((202, None))
            req._fz_exec = (pool, ident)
            return req
        if choice == "exec_get":
            if self.executions and rng.random() < 0.8:
                p, ident, eid = rng.choice(self.executions)
                pool = p
            else:
                ident, eid = self.pick_id(pool), rng.choice(["00000000-0000-0000-0000-000000000000", "x", "1" * 200])
            return self.make(rng.choice(["GET", "HEAD"]), self.target(pool, "executions/" + eid, ident),
                             check=lambda r: check_resource(load_json(r.body)))
        if choice == "session":
            ident = self.pick_id(pool)
            if rng.random() < 0.75:
                return self.make(rng.choice(["GET", "GET", "HEAD"]), self.target(pool, "session", ident),
                                 check=lambda r: need(load_json(r.body), SESSION_KEYS, "session object"))
            self.forget_session(pool, ident)
            return self.make("DELETE", self.target(pool, "session", ident))
        if choice == "list":
            extra = rng.choice(["", "skip=0", "skip=1", "skip=100", "skip=-1", "skip=abc", "skip=99999999999999999999",
                                "skip=18446744073709551615", "skip=18446744073709551516", "skip=1&skip=2", "skip="])
            if rng.random() < 0.5:
                req = self.make(rng.choice(["GET", "HEAD"]), self.target(pool, "listSessions", extra_query=extra),
                                check=lambda r: check_session_list(load_json(r.body), False))
            else:
                req = self.make("POST", self.target(pool, ".management/listSessions", extra_query=extra),
                                check=lambda r: check_session_list(load_json(r.body), True))
            return req  # a bad skip's 400: expectation()
        if choice == "mgmt":
            ident = self.pick_id(pool)
            if rng.random() < 0.7:
                return self.make("POST", self.target(pool, ".management/getSession", ident),
                                 check=lambda r: need(load_json(r.body), SESSION_KEYS, "session object"))
            self.forget_session(pool, ident)
            return self.make("POST", self.target(pool, ".management/stopSession", ident),
                             check=lambda r, i=ident, p=pool: [] if r.body == (
                                 "Session %s in session pool %s stopped." % (i, p)).encode() else ["stopSession body %r" % r.body])
        if choice == "metadata":
            return self.make(rng.choice(["GET", "HEAD"]), self.target(pool, "metadata"),
                             check=lambda r: [] if isinstance(load_json(r.body).get("runtimes"), list) else ["metadata without runtimes"])
        if choice == "upload":
            ident = self.pick_id(pool)
            name = rng.choice(["a.txt", "data.csv", "/mnt/data/x.json", "img.png", "n%d.bin" % rng.randint(0, 9),
                               "sub dir.txt", "\u00e9t\u00e9.txt", "x" * 255, "dir1/b.txt", ".hidden", "a;b=c.txt"])
            size = rng.choice([0, 1, 100, 5000, 65536, 300000])
            data = rng.randbytes(size)
            b_shape = rng.random() < 0.5
            parts = [(disposition(b"file", name.encode()) + (b"\r\nContent-Type: application/octet-stream" if rng.random() < 0.5 else b""), data)]
            if rng.random() < 0.3:
                parts.insert(0, (disposition(b"meta"), b"some field"))
            boundary, body = multipart(rng, parts)
            extra_query = rng.choice(["", "", "path=", "path=/mnt/data", "path=sub"])
            req = self.make("POST", self.target(pool, "files/upload" if b_shape else "files", ident, extra_query),
                            [("Content-Type", "multipart/form-data; boundary=" + (
                                '"%s"' % boundary if rng.random() < 0.3 else boundary))], body,
                            name_ok=True, body_ok=True, check=self.check_upload_b if b_shape else lambda r: check_file_item(load_json(r.body)))
            if extra_query == "path=sub" or "/" in name.replace("/mnt/data/", ""):
                pass  # the directory may not exist: 404 FileNotFound stays allowed
            else:
                req.allowed.discard((404, "FileNotFound"))
            req._fz_upload = (pool, ident, (("sub/" if extra_query == "path=sub" else "") + name.replace("/mnt/data/", "")), data)
            return req
        if choice == "files_list":
            ident = self.pick_id(pool)
            extra = rng.choice(["", "path=", "path=/mnt/data", "recursive=true", "path=sub&recursive=1", "path=dir1"])
            return self.make(rng.choice(["GET", "HEAD"]), self.target(pool, "files", ident, extra), name_ok=True,
                             check=lambda r: check_files_list(load_json(r.body)))
        if choice in ("download", "file_get", "file_delete"):
            ident = self.pick_id(pool)
            known = self.files.get((pool, ident))
            if known and rng.random() < 0.8:
                name = rng.choice(list(known))
            else:
                name = rng.choice(["a.txt", "missing.txt", "dir1/b.txt", "sub/a.txt"])
            enc = q(name) if rng.random() < 0.7 else q(name, safe="/")
            if choice == "download":
                suffix = rng.choice(["files/content/" + q(name, safe="/"), "files/" + q(name) + "/content"])
                return self.make(rng.choice(["GET", "GET", "HEAD"]), self.target(pool, suffix, ident), name_ok=True,
                                 check=self.check_download)
            if "/" in enc:
                enc = q(name)
            if choice == "file_get":
                return self.make(rng.choice(["GET", "HEAD"]), self.target(pool, "files/" + enc, ident), name_ok=True,
                                 check=lambda r: check_file_item(load_json(r.body)))
            if known:
                known.pop(name, None)
            return self.make("DELETE", self.target(pool, "files/" + enc, ident), name_ok=True)
        raise AssertionError(choice)

    def forget_session(self, pool, ident):
        self.files.pop((pool, ident), None)
        self.executions = [e for e in self.executions if (e[0], e[1]) != (pool, ident)]

    # ---- shape checks that need the fuzzer's state ----
    def check_result(self, code, j, family):
        """The cell's value as API.md §3 says, for the cells whose value is known (EXPECTED_RESULT)."""
        if code not in EXPECTED_RESULT:
            return []
        p = j.get("properties", {}) if family == "B" else j
        if p.get("errorCode"):
            return []  # a timeout or a crash on a loaded machine: not a wrong value
        want = EXPECTED_RESULT[code]
        got = p.get("result")
        if got != want or type(got) is not type(want):
            return ["cell %r answered result %r, expected %r (API.md §3)" % (code, str(got)[:80], str(want)[:80])]
        if family == "B" and p.get("executionResult") != got:
            return ["executionResult differs from result"]
        if code == "print('hello')" and p.get("stdout") != "hello\n":
            return ["print('hello') answered stdout %r" % p.get("stdout")]
        return []

    def check_result_c(self, code, j):
        if code not in EXPECTED_RESULT or j.get("status") == "Running" or not isinstance(j.get("result"), dict):
            return []
        if isinstance(j.get("error"), dict) and j["error"].get("code") != "ExecutionFailed":
            return []
        want, got = EXPECTED_RESULT[code], j["result"].get("executionResult")
        if got != want or type(got) is not type(want):
            return ["cell %r answered executionResult %r, expected %r (API.md §3)" % (code, str(got)[:80], str(want)[:80])]
        return []

    def check_metrics(self, r):
        errs = []
        if not (r.header("Content-Type") or "").startswith("text/plain; version=0.0.4"):
            errs.append("metrics Content-Type %r" % r.header("Content-Type"))
        for line in r.body.decode("utf-8").splitlines():
            if not METRIC_LINE_RE.match(line):
                errs.append("metrics line %r" % line[:200])
                break
        return errs

    def check_openapi(self, r):
        j = load_json(r.body)
        errs = need(j, ["openapi", "paths"], "openapi document")
        if not errs:
            mine = {(m.lower(), p.replace("...", "")) for m, p, _ in ROUTES}
            theirs = {(m, p) for p, v in j["paths"].items() for m in v if not p.endswith("{path}")}
            if mine != theirs:
                errs.append("openapi paths differ from API.md's route table: +%r -%r" % (
                    sorted(theirs - mine)[:5], sorted(mine - theirs)[:5]))
        return errs

    def check_exec_post(self, r):
        j = load_json(r.body)
        errs = check_resource(j)
        loc = r.header("Operation-Location") or ""
        if not r.header("operation-id") or not loc.startswith("executions/"):
            errs.append("executions answer without operation-id / Operation-Location (%r)" % loc)
        return errs

    def check_upload_b(self, r):
        j = load_json(r.body)
        errs = need(j, ["$id", "value"], "upload B-files list")
        if not errs and len(j["value"]) != 1:
            errs.append("upload list with %d items" % len(j["value"]))
        for item in j.get("value", []):
            errs += check_file_item(item)
        return errs

    def check_download(self, r):
        errs = []
        if not r.header("Last-Modified"):
            errs.append("download without Last-Modified")
        if not r.header("Content-Type"):
            errs.append("download without Content-Type")
        return errs

    # ---- cases ----
    def case_valid(self):
        req = self.valid_request()
        mode = self.rng.choices(["plain", "split", "halfclose", "chunked", "http10"], [70, 8, 8, 10, 4])[0]
        if mode == "chunked" and req.body:
            req.framing = "chunked"
            req._raw = None
            mode = "plain"
        elif mode == "http10" and not req.body:
            req.version = "HTTP/1.0"
            req._raw = None
            mode = "plain"
        elif mode in ("chunked", "http10"):
            mode = "plain"
        if mode == "plain" and self.rng.random() < 0.4:
            self.keepalive_exchange(req)
        else:
            r = self.exchange([req], mode)[0]
            self.after_valid(req, r)

    def keepalive_exchange(self, req):
        """Reuses a kept-alive connection when one is fresh; keeps it for later when the answer allows."""
        now = time.monotonic()
        conn = None
        while self.keepalive:
            s, reader, last = self.keepalive.pop()
            if now - last < IDLE_TIMEOUT_MS / 1000 / 2 and not reader.eof:
                conn = (s, reader)
                break
            s.close()
        if conn is None:
            try:
                s = self.connect()
            except OSError as e:
                self.finding("connect", req.key, "cannot connect: %s" % e)
                return
            conn = (s, Reader(s))
        else:
            self.case_sent.append(conn[0]._fz_log)
            conn[0]._fz_log.clear()
        s, reader = conn
        try:
            self.send(s, req.raw())
        except OSError:
            s.close()
            return self.exchange([req])
        r = self.read_one(reader, req, time.monotonic())
        self.after_valid(req, r)
        if r is not None and (r.header("Connection") or "").lower() != "close" and req.version == "HTTP/1.1" and len(self.keepalive) < 3:
            self.keepalive.append((s, reader, time.monotonic()))
        else:
            s.close()

    def after_valid(self, req, r):
        if r is None:
            return
        if getattr(req, "_fz_exec", None) and r.status in (200, 202) and not req.head:
            try:
                eid = load_json(r.body)["id"]
                pool, ident = req._fz_exec
                self.executions.append((pool, ident, eid))
                self.executions = self.executions[-50:]
            except (ValueError, KeyError, TypeError):
                pass
        if getattr(req, "_fz_upload", None) and r.status == 200:
            pool, ident, name, data = req._fz_upload
            self.files[(pool, ident)][name] = data

    def case_roundtrip(self):
        """Upload a file, then download it: the bytes must come back unchanged."""
        pool = self.pick_pool()
        if not self.pools.get(pool):
            return self.case_valid()
        ident = self.pick_id(pool, fresh=0)
        name = "rt-%d.bin" % self.rng.randint(0, 99)
        data = self.rng.randbytes(self.rng.choice([0, 1, 1000, 70000, 1 << 20, 3 << 20]))
        boundary, body = multipart(self.rng, [(disposition(b"file", name.encode()), data)])
        up = self.make("POST", self.target(pool, "files", ident), [("Content-Type", "multipart/form-data; boundary=" + boundary)],
                       body, name_ok=True, body_ok=True, check=lambda r: check_file_item(load_json(r.body)))
        up.allowed.discard((404, "FileNotFound"))
        down = self.make("GET", self.target(pool, "files/content/" + name, ident), name_ok=True, check=self.check_download)
        r1, r2 = self.exchange([up, down])
        if r1 is not None and r1.status == 200:
            self.files[(pool, ident)][name] = data
            j = load_json(r1.body)
            if j.get("sizeInBytes") != len(data):
                self.finding("content", up.key, "upload of %d bytes answered sizeInBytes %r" % (len(data), j.get("sizeInBytes")), r1)
            if r2 is not None and r2.status == 200 and r2.body != data:
                self.finding("content", down.key, "downloaded %d bytes differ from the %d uploaded" % (len(r2.body), len(data)), r2)

    def case_mutated(self):
        """A valid request with one thing wrong in its method, target, query or headers."""
        rng = self.rng
        req = self.valid_request()
        method, target, body = req.method, req.target, req.body
        base, _, query = target.partition("?")
        headers = [(k, v) for k, v in req.headers if k not in ("Host", "Authorization")]
        auth_ok = True
        how = rng.choice(["method", "method", "no_ident", "dup_ident", "bad_ident", "long_ident", "pct_garbage",
                          "utf8_path", "long_path", "api_version", "auth", "auth", "headers", "path_shape", "query_shape",
                          "host", "content_type"])
        mutated = False
        ident_ok = "auto"
        note = how
        if how == "method":
            method = rng.choice(["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS", "TRACE", "PROPFIND",
                                 "MKCOL", "LINK", "SEARCH", "PURGE", "REPORT"])
            if route_of(method, target)[1] in ("pools.create", "pools.update", "pools.delete"):
                method = "OPTIONS"  # the pools API's writes are fuzzed with bodies the fuzzer controls, not here
            if method in ("GET", "HEAD", "DELETE", "OPTIONS", "TRACE") and rng.random() < 0.7:
                body = b""
        elif how == "no_ident":
            query = "&".join(p for p in query.split("&") if not p.startswith("identifier="))
        elif how == "dup_ident":
            query = (query + "&" if query else "") + "identifier=" + rng.choice(["zz", "other-id", q(self.pick_id("default")), ""])
        elif how == "bad_ident":
            bad = rng.choice(["abc", "", "a b", "a%2Fb%2Fc", "%zz%zz", "%4", "%", "abcd%00", "abc%C3%A9", "%FF%FE%FD%FC",
                              "abcd%0A", "ab\tcd", "abcd%2", "%%%%", "abcd%25", "a" * 129, "b" * 128, "abcd+e",
                              "abcd%20", "..%2F..", "abc/def", "日本語日本".encode().decode("latin-1"),
                              "%E6%97%A5%E6%9C%AC%E8%AA%9E%E6%97%A5",
                              "abcd\"", "abcd'", "abcd`", "abcd\\", "abcd!", "abcd*", "abcd,", "abcd=", "abcd?"])
            query = "&".join(p for p in query.split("&") if not p.startswith("identifier="))
            query = (query + "&" if query else "") + "identifier=" + bad
            mutated = any(c in bad for c in " \t\"\\`") or any(ord(c) > 126 for c in bad)
            if not mutated:
                ident_ok = "auto"
        elif how == "long_ident":
            n = rng.choice([127, 128, 129, 200, 1000, 4000, 8000, 9000, 20000])
            query = "identifier=" + "".join(rng.choice("abcXYZ019-_.~") for _ in range(n))
            mutated = True  # over 8 KiB the target is refused by the HTTP layer (414)
        elif how == "pct_garbage":
            base = base.replace("/", "/%" + rng.choice(["", "z", "zz", "0", "00", "FF", "2F", "2e%2e", "C0%AF"]), 1) if rng.random() < 0.5 else base + "%" + rng.choice(["", "g1", "00", "2F"])
            mutated = True
        elif how == "utf8_path":
            pos = rng.randint(1, len(base))
            base = base[:pos] + rng.choice(BAD_UTF8 + [b"\xc3\xa9", b"\x00", b"\x7f", b" ", b"\t"]).decode("latin-1") + base[pos:]
            mutated = True
        elif how == "long_path":
            n = rng.choice([100, 300, 4000, 8100, 8192, 9000, 65536])
            base = base.rstrip("/") + "/" + "x" * n
            mutated = n > 7000
        elif how == "api_version":
            query = (query + "&" if query else "") + rng.choice(["api-version=", "api-version", "api-version=%zz",
                                                                 "api-version=1&api-version=2", "api-version=" + "9" * 3000,
                                                                 "api-version=\u00e9".encode().decode("latin-1")])
            mutated = True
        elif how == "auth":
            if self.auth:
                auth_ok = False
                # Wrong also in another way: the token is still what must be answered (API.md §1: else 401).
                also = rng.choice(["", "", "ident", "name", "body"])
                if also == "ident":
                    query = "&".join(p for p in query.split("&") if not p.startswith("identifier="))
                    query = (query + "&" if query else "") + "identifier=" + rng.choice(["ab", "%zz", "a" * 200])
                elif also == "name" and req.key in ("files.get", "files.delete", "files.content"):
                    bad = rng.choice(["..%2Fx", "..", "a%00b", "x" * 300, "%2Fetc%2Fpasswd"])
                    base = base.split("files/")[0] + ("files/content/" if req.key == "files.content" else "files/") + bad
                elif also == "name" and req.key == "files.list":
                    query = (query + "&" if query else "") + "path=" + rng.choice(["..", "%2Fetc", "a%00"])
                elif also == "body" and method in ("POST", "PUT", "PATCH"):
                    body = rng.choice([b"{", b"[]", b"--x\r\n", b"\xff"])
        elif how == "headers":
            extra = rng.choice([[("X-Dup", "a")] * 50, [("Transfer-Encoding", "gzip")], [("Content-Length", "abc")],
                                [("Content-Length", "5"), ("Content-Length", "6")], [("Expect", "weird")],
                                [("Connection", "upgrade"), ("Upgrade", "websocket")], [("Host", "")],
                                [("X-\u00e9", "v")], [("X-A", "\u00e9\u00e8")], [("X-A", "a\x00b")], [("Bad Name", "v")],
                                [(":authority", "x")], [("X-Long", "v" * 60000)], [("Connection", "close, keep-alive")]])
            headers = headers + extra
            mutated = True
        elif how == "path_shape":
            base = rng.choice([base + "/", base.replace("/", "//", 1), base + "/.", base.replace("/", "/./", 1),
                               base + "/../healthz", base.upper(), base + "%2F", "/" + base, base + "#frag", base + ";x=1",
                               "http://127.0.0.1:%d%s" % (self.port, base), "*", base.replace("/pools/", "/pools//"),
                               base + "/extra/segments/x", base[:-1] if len(base) > 1 else base])
            mutated = True
        elif how == "query_shape":
            query = rng.choice(["&&&" + query, query + "&", query + "&=&==", query.replace("=", "==", 1),
                                "?" + query, query + "&identifier", query + "#frag", ";".join(query.split("&")),
                                "&".join(["x%d=%d" % (i, i) for i in range(rng.choice([10, 500, 3000]))]) + "&" + query])
            mutated = True
        elif how == "host":
            headers = [("Host", rng.choice(["", "a" * 5000, "127.0.0.1:1", "exa mple", "\u00e9"]))] + headers
            mutated = True
        elif how == "content_type":
            headers = [(k, v) for k, v in headers if k.lower() != "content-type"]
            headers.append(("Content-Type", rng.choice(["text/plain", "application/json; charset=latin-1",
                                                        "multipart/form-data", "application/x-www-form-urlencoded",
                                                        "application/json" * 100, ""])))
            mutated = True
        target = base + ("?" + query if query else "")
        if mutated and method == "HEAD":
            method = "GET"  # see case_framing
        name_ok = None
        body_ok = None
        kind, key, _ = route_of(method, target)
        if how in ("method", "no_ident", "dup_ident", "bad_ident", "auth", "api_version", "long_ident") and key == req.key:
            # The body and names are those of the valid request.
            body_ok = True if key in ("execute", "python.execute", "executions.post") else None
            name_ok = True if key and key.startswith("files.") and how != "long_ident" else None
        if key in ("files.upload", "files.post") and how == "content_type":
            body_ok = False
        if key in ("execute", "python.execute", "executions.post") and method == req.method and body_ok is None and how != "content_type":
            body_ok = True
        if key in ("pools.create", "pools.update"):
            body_ok = None
        new = self.make(method, target, headers, body, auth_ok=auth_ok, ident_ok=ident_ok, name_ok=name_ok,
                        body_ok=body_ok, mutated=mutated, note=note, check=None if (req.key != key) else req.check,
                        host=how != "host")
        if key in ("files.upload", "files.post") and how != "content_type" and method == "POST" and auth_ok:
            # A wrong header can make the boundary unusable: the body is then refused.
            new.allowed |= {(400, "InvalidRequestBody")}
        if how == "method" and method == "HEAD":
            new.check = None
        self.exchange([new], self.rng.choice(["plain", "plain", "halfclose"]))

    def case_hostile_json(self):
        """An execution or pool-settings body that is wrong in shape, type, number or encoding."""
        rng = self.rng
        pool = self.pick_pool()
        target_kind = rng.choices(["execute", "python", "executions", "pools.create", "pools.update"], [4, 2, 4, 3, 2])[0]
        if target_kind in ("pools.create", "pools.update"):
            name = rng.choice(list(FUZZ_POOLS) + ["default", "nope", "fz-c"])
            body = hostile_settings(rng, name if rng.random() < 0.9 else rng.choice(["", "UPPER", "-x", "a" * 64, "a_b"]))
            if rng.random() < 0.4:
                body = mutate_bytes(rng, body)
                if not poisoned_ok(body):
                    body = hostile_settings(rng, name)
            if rng.random() < 0.05:
                body = b"[" * 100000
            if target_kind == "pools.create":
                req = self.make("POST", "/pools", self.json_headers(), body, body_ok=False, body_code="InvalidPoolSettings")
                req.allowed |= {(400, "InvalidPoolSettings")}
                req.allowed -= {(201, None), (409, "PoolExists"), (409, "TooManyPools"), (409, "PoolDeleted")}
            else:
                pname = rng.choice(list(self.pools) + ["nope"])
                if pname == "default" and not self.pool_mode:
                    pname = "nope"
                req = self.make(rng.choice(["PUT", "PATCH"]), "/pools/" + pname, self.json_headers(), body, body_ok=False,
                                body_code="InvalidPoolSettings")
            return self.exchange([req])
        family = {"execute": "B", "python": "legacy", "executions": "C"}[target_kind]
        suffix = {"execute": rng.choice(["code/execute", "execute"]), "python": "python/execute", "executions": "executions"}[target_kind]
        ident = self.pick_id(pool)
        shell = self.pool_types.get(pool) == "Shell"
        # The timeout may be mutated away or to anything: no code that needs one.
        body = self.exec_body(family, code=None if shell else rng.choice(FAST_SNIPPETS), shell=shell)
        how = rng.choice(["type", "type", "missing", "numbers", "nan", "dup", "deep", "bytes", "top", "unicode", "big",
                          "shell_on_python", "extra"])
        valid = None
        inner = body.get("properties", body)
        code_key = "code" if "code" in inner else ("pythonCode" if "pythonCode" in inner else None)
        if how == "type":
            k = rng.choice(list(inner) + ["properties"])
            v = rand_scalar(rng)
            if k == "properties":
                body = {"properties": v}
                valid = False if not isinstance(v, dict) else None
            else:
                inner[k] = v
                is_string = isinstance(v, str) or (isinstance(v, RawJson) and v.text.startswith('"'))
                if k in ("code", "pythonCode", "shellCommand") and not is_string:
                    valid = False
                elif k in ("code", "pythonCode", "shellCommand") and isinstance(v, RawJson):
                    valid = None  # a string literal with odd escapes: the server may refuse it
        elif how == "missing":
            for k in ("code", "pythonCode", "shellCommand", "execCommandAndArgs"):
                inner.pop(k, None)
            valid = False
        elif how == "numbers":
            inner[rng.choice(["timeoutInSeconds", "outputStreamsMaxLength"])] = RawJson(rng.choice(WEIRD_NUMBERS))
        elif how == "nan":
            inner[rng.choice(["timeoutInSeconds", "outputStreamsMaxLength", "code", "executionType"])] = RawJson(rng.choice(NAN_LIKE))
        elif how == "dup":
            items = list(inner.items())
            items.insert(rng.randint(0, len(items)), (rng.choice(list(inner)), rand_scalar(rng)))
            inner = DupDict(items)
            body = {"properties": inner} if "properties" in body else inner
        elif how == "deep":
            body = RawJson(deep(rng, rng.choice([10, 100, 1000, 1025, 5000, 100000])))
            valid = False
        elif how == "top":
            body = rng.choice([[], "code", 1, None, [body], RawJson(""), RawJson("   "), RawJson("{}"), RawJson("{\"properties\":{}}")])
            valid = False
        elif how == "unicode":
            if code_key:
                inner[code_key] = rng.choice(["print('\\udcff')", "'\u00e9\u4e2d\U0001f600'", "print('\x00')",
                                              "x = '\u202e'\nx", RawJson("\"print(1)\\ud800\""), RawJson("\"\\u0000\"")])
        elif how == "big":
            if code_key:
                inner[code_key] = "x = 1\n" * rng.choice([1000, 100000]) + "x"
        elif how == "shell_on_python":
            inner = {"execCommandAndArgs": ["echo", "hi"]} if rng.random() < 0.5 else {"shellCommand": "echo hi"}
            body = inner
            valid = True if shell else False
        elif how == "extra":
            inner[rng.choice(["identifier", "api-version", "sessionId", "x" * 300, ""])] = rand_scalar(rng)
        data = raw_json(body).encode("utf-8", "surrogatepass")
        if how == "bytes":
            data = mutate_bytes(rng, data)
            valid = None
            obj = python_json_object(data)
            if obj is None:
                try:
                    data.decode("utf-8")
                    json.loads(data)
                except ValueError:
                    valid = False  # neither complete JSON nor an object at the start
        if how == "top" and isinstance(body, RawJson) and body.text.startswith("{"):
            valid = False  # an object without code
        req = self.make("POST", self.target(pool, suffix, ident), self.json_headers(), data, body_ok=valid,
                        note="hostile json: " + how)
        if valid is None:
            req.allowed |= {(400, "InvalidRequestBody")} if self.pools.get(self.pool_of_target(req.key, req.target)) else set()
        if len(data) > EXEC_BODY_LIMIT:
            req.allowed |= {(413, "PayloadTooLarge")}
        self.exchange([req], rng.choice(["plain", "plain", "split"]))

    def case_hostile_multipart(self):
        rng = self.rng
        pool = self.pick_pool()
        ident = self.pick_id(pool)
        data = rng.randbytes(rng.choice([0, 10, 5000]))
        fname = b"f.txt"
        name_ok = True
        body_ok = None
        how = rng.choice(["no_boundary", "long_boundary", "mismatch", "no_close", "no_disposition", "bad_names",
                          "many_parts", "big_headers", "no_file", "preamble", "epilogue", "quotes", "empty", "garbage",
                          "nested_name", "two_files", "bad_ct"])
        boundary = None
        ctype = None
        closing = True
        parts = None
        preamble = epilogue = b""
        if how == "no_boundary":
            ctype = rng.choice(["multipart/form-data", "multipart/form-data; boundary=", "multipart/form-data; boundary=\"\"",
                                "multipart/form-data; boundary=\"unterminated", "multipart/mixed; boundary=x",
                                "multipart/form-data; charset=utf-8", "text/plain"])
            body_ok = False
        elif how == "long_boundary":
            boundary = "b" * rng.choice([70, 71, 200, 5000])
            body_ok = None if len(boundary) <= 70 else False
        elif how == "mismatch":
            ctype = "multipart/form-data; boundary=other"
            body_ok = False
        elif how == "no_close":
            closing = False
            body_ok = False
        elif how == "no_disposition":
            parts = [(b"Content-Type: text/plain", data)]
            body_ok = False
        elif how == "bad_names":
            fname = rng.choice([b"../x", b"a/../../etc/passwd", b"/etc/passwd", b"..", b"a\x00b", b"x" * 256,
                                b"/mnt/data/../x", b"/mnt/data", b"/mnt/data/", b".", b"a/" + b"y" * 300 + b"/z",
                                b"\xff\xfe.txt", b"a\r\nb", b"%2e%2e%2fx", b"a\\..\\b", b"CON", b"a" * 5000])
            name_ok = file_name_ok(fname)
            if fname in (b"a\r\nb",):
                name_ok = None
        elif how == "many_parts":
            parts = [(disposition(b"f%d" % i), b"v") for i in range(rng.choice([63, 64, 65, 1000]))] + [(disposition(b"file", b"m.txt"), data)]
            body_ok = None if len(parts) <= 64 else False
        elif how == "big_headers":
            parts = [(disposition(b"file", b"h.txt") + b"\r\nX-Pad: " + b"p" * rng.choice([100, 16000, 17000, 70000]), data)]
            body_ok = None
        elif how == "no_file":
            parts = [(disposition(rng.choice([b"other", b"file"]), rng.choice([None, b""])), data)]
            body_ok = False
        elif how == "preamble":
            preamble = rng.choice([b"junk\r\n", b"x" * 20000, b"\r\n--nope\r\n"])
            body_ok = None
        elif how == "epilogue":
            epilogue = rng.choice([b"junk", b"--again--\r\n" * 10, rng.randbytes(1000)])
        elif how == "quotes":
            parts = [(b'Content-Disposition: form-data; name=file; filename=noquotes.txt', data)]
            body_ok = None
        elif how == "empty":
            ctype = "multipart/form-data; boundary=xyz"
            boundary = "xyz"
            parts = []
            closing = rng.random() < 0.5
            body_ok = False
        elif how == "garbage":
            parts = [(rng.randbytes(rng.randint(0, 200)), data)]
            body_ok = None
        elif how == "nested_name":
            fname = rng.choice([b"a/b/c.txt", b"dir1/x.txt", b"./x.txt", b"a//b.txt"])
            name_ok = True
        elif how == "two_files":
            parts = [(disposition(b"file", b"one.txt"), data), (disposition(b"file", b"two.txt"), data)]
        elif how == "bad_ct":
            ctype = rng.choice(["multipart/form-data; boundary=a; boundary=b", "MULTIPART/FORM-DATA; BOUNDARY=zz",
                                "multipart/form-data;boundary=zz", "multipart/form-data; boundary=z z"])
            boundary = "zz"
            body_ok = None
        if parts is None:
            parts = [(disposition(b"file", fname), data)]
        boundary, body = multipart(rng, parts, boundary=boundary, closing=closing, preamble=preamble, epilogue=epilogue)
        if ctype is None:
            ctype = "multipart/form-data; boundary=" + boundary
        if how == "mutate" or rng.random() < 0.1:
            body = mutate_bytes(rng, body)
            body_ok = None
            name_ok = None if name_ok else name_ok
        req = self.make("POST", self.target(pool, rng.choice(["files", "files/upload"]), ident), [("Content-Type", ctype)],
                        body, name_ok=name_ok, body_ok=body_ok, note="hostile multipart: " + how)
        if name_ok is None or body_ok is None:
            req.allowed |= {(400, "InvalidRequestBody"), (400, "InvalidFileName")} & ALLOWED["files.upload"] if self.pools.get(self.pool_of_target(req.key, req.target)) else set()
        self.exchange([req], rng.choice(["plain", "split", "plain"]))

    def case_framing(self):
        """Content-Length lies, bad chunked framing, Expect: 100-continue, resets."""
        rng = self.rng
        req = self.valid_request()
        if req.head:
            # Whether an error answer to a malformed HEAD has a body depends on how far the parser got: GET instead.
            req.method, req._raw, req.check = "GET", None, None
        how = rng.choice(["cl_short", "cl_long", "chunk_bad", "chunk_incomplete", "expect", "expect_big", "rst_mid",
                          "rst_after", "cl_and_te", "te_variants", "head_split_stall", "cl_huge"])
        self.case_kinds["framing:" + how] += 1
        if how in ("cl_short", "cl_long", "cl_huge"):
            body = req.body or b'{"properties":{"code":"1"}}'
            if how == "cl_short":
                declared = rng.randint(0, max(0, len(body) - 1))
            elif how == "cl_long":
                declared = len(body) + rng.choice([1, 10, 1000, 100000])
            else:
                declared = rng.choice([10 ** 7, 2 ** 32, 2 ** 63 - 1, 2 ** 64 + 5, 10 ** 30])
            head = self.head_bytes(req, [("Content-Length", str(declared))])
            s = self.connect()
            try:
                self.maybe_warm(s)
                self.send(s, head + body)
                if how == "cl_short":
                    # The extra bytes start another request: whatever comes must be well-formed; then EOF.
                    s.shutdown(socket.SHUT_WR)
                    self.read_all(s, req.key + " [cl_short]", BOUND_S + 5, head=req.head)
                else:
                    self.stall(s, req.key + " [%s]" % how, expect_limit=(how == "cl_huge"))
            except OSError:
                pass
            finally:
                s.close()
            return
        if how in ("chunk_bad", "chunk_incomplete"):
            body = req.body or b"abc"
            bad = rng.choice([b"zz\r\nabc\r\n0\r\n\r\n", b"-1\r\nabc\r\n0\r\n\r\n", b"ffffffffffffffffff\r\nabc\r\n",
                              b"3\r\nabcdef\r\n0\r\n\r\n", b"3\nabc\n0\n\n", b"3\r\nabc0\r\n\r\n", b"\r\n\r\n",
                              b"10000000\r\n" + body, b"3;" + b"e" * 10000 + b"\r\nabc\r\n0\r\n\r\n",
                              b"0\r\n" + b"X-T: v\r\n" * 5000 + b"\r\n", b"0x3\r\nabc\r\n0\r\n\r\n", b"3 \r\nabc\r\n0\r\n\r\n"])
            if how == "chunk_incomplete":
                bad = chunk_body(rng, body)[:-rng.randint(1, 5)]
            head = self.head_bytes(req, [("Transfer-Encoding", "chunked")])
            s = self.connect()
            try:
                self.maybe_warm(s)
                self.send(s, head + bad)
                if rng.random() < 0.5:
                    s.shutdown(socket.SHUT_WR)
                    self.read_all(s, req.key + " [%s]" % how, BOUND_S + 5, head=req.head)
                else:
                    self.read_all(s, req.key + " [%s]" % how, IDLE_TIMEOUT_MS / 1000 + 4, head=req.head)
            except OSError:
                pass
            finally:
                s.close()
            return
        if how in ("expect", "expect_big"):
            body = req.body or b"{}"
            declared = len(body) if how == "expect" else 2 ** 40
            head = self.head_bytes(req, [("Expect", "100-continue"), ("Content-Length", str(declared))])
            s = self.connect()
            reader = Reader(s)
            try:
                self.send(s, head)
                try:
                    r = reader.read_response(req.head, time.monotonic() + BOUND_S)
                except (Timeout, Closed, Malformed) as e:
                    self.finding("protocol", req.key, "no 100 Continue or final answer after Expect (%s)" % type(e).__name__)
                    return
                if r.status == 100:
                    if how == "expect_big":
                        self.finding("protocol", req.key, "100 Continue for a body over every limit")
                        return
                    self.send(s, body)
                    # Now the real answer, judged like the valid request (with the body actually sent).
                    req2 = req
                    r2 = self.read_one(reader, req2, time.monotonic())
                    self.after_valid(req2, r2)
                else:
                    self.requests += 1
                    self.stats_route[req.key + " [expect]"] += 1
                    self.stats_status[r.status] += 1
                    self.stats_route_status[(req.key + " [expect]", r.status)] += 1
                    self.check_any(r, req.key + " [expect]")
                    if how == "expect" and r.status < 400 and req.body:
                        self.finding("protocol", req.key, "final %d before the body was sent, without 100 Continue" % r.status, r)
            except OSError:
                pass
            finally:
                s.close()
            return
        if how in ("rst_mid", "rst_after"):
            data = req.raw()
            s = self.connect()
            try:
                if how == "rst_mid" and len(data) > 2:
                    self.send(s, data[:rng.randint(1, len(data) - 1)])
                else:
                    self.send(s, data)
                time.sleep(rng.choice([0, 0.001, 0.01, 0.05]))
            except OSError:
                pass
            self.rst(s)
            self.after_rst(req)
            return
        if how == "cl_and_te":
            head = self.head_bytes(req, [("Content-Length", str(len(req.body) + 3)), ("Transfer-Encoding", "chunked")])
            data = head + chunk_body(rng, req.body or b"abc")
        elif how == "te_variants":
            te = rng.choice(["chunked, chunked", "gzip, chunked", "chunked, gzip", "identity", "Chunked", " chunked",
                             "chunked\x00", "x-chunked"])
            head = self.head_bytes(req, [("Transfer-Encoding", te)])
            data = head + chunk_body(rng, req.body or b"abc")
        else:  # head_split_stall: the head in pieces with pauses (under the header timeout)
            data = req.raw()
            s = self.connect()
            try:
                cut = sorted(rng.sample(range(1, max(2, len(data))), min(3, max(1, len(data) - 1))))
                prev = 0
                for c in cut + [len(data)]:
                    self.send(s, data[prev:c])
                    prev = c
                    time.sleep(rng.choice([0.01, 0.1, 0.3]))
                r = self.read_one(Reader(s), req, time.monotonic())
                self.after_valid(req, r)
            except OSError:
                pass
            finally:
                s.close()
            return
        s = self.connect()
        try:
            self.maybe_warm(s)
            self.send(s, data)
            s.shutdown(socket.SHUT_WR)
            self.read_all(s, req.key + " [%s]" % how, BOUND_S + 5, head=req.head)
        except OSError:
            pass
        finally:
            s.close()

    def maybe_warm(self, s, p=0.4):
        if self.rng.random() < p:
            self.warm_up(s, Reader(s))  # its answer is read whole: the reader holds nothing after it

    def after_rst(self, req):
        """A reset request may still have taken effect: what the fuzzer knows of it becomes uncertain."""
        if req.key == "pools.create" or req.key == "pools.delete" or req.key == "pools.update":
            for n in FUZZ_POOLS:
                if self.pools.get(n) is not True:
                    self.pools[n] = None
            self.resolve_pools()

    def head_bytes(self, req, replace):
        """The request's head with its framing headers replaced."""
        names = {k.lower() for k, _ in replace}
        lines = [req.method.encode() + b" " + req.target.encode("latin-1") + b" " + req.version.encode()]
        for k, v in req.headers:
            if k.lower() in names or k.lower() in ("content-length", "transfer-encoding"):
                continue
            lines.append(k.encode("latin-1") + b": " + v.encode("latin-1"))
        for k, v in replace:
            lines.append(k.encode() + b": " + v.encode("latin-1"))
        return b"\r\n".join(lines) + b"\r\n\r\n"

    def stall(self, s, label, expect_limit=False):
        """The request is incomplete (its body shorter than announced): nothing may be answered yet except an error of
        the HTTP layer; then the client leaves, half-closes, or waits for the server's timeout."""
        reader = Reader(s)
        try:
            r = reader.read_response(False, time.monotonic() + (0.3 if not expect_limit else BOUND_S))
            self.requests += 1
            self.stats_route[label] += 1
            self.stats_status[r.status] += 1
            self.stats_route_status[(label, r.status)] += 1
            self.check_any(r, label)
            if r.status < 400:
                self.finding("protocol", label, "answered %d before the announced body arrived" % r.status, r)
            return
        except Timeout:
            if expect_limit:
                self.finding("protocol", label, "a body over every limit was not refused (no 413)")
                return
        except Closed:
            return
        except Malformed as e:
            self.finding("malformed", label, str(e))
            return
        what = self.rng.choice(["close", "rst", "shut", "timeout"])
        if what == "close":
            return
        if what == "rst":
            self.rst(s)
            return
        if what == "shut":
            s.shutdown(socket.SHUT_WR)
            out = self.read_all(s, label, BOUND_S)
            if out and out[-1] == "timeout":
                self.finding("hang", label, "connection not closed after the client half-closed mid-body")
            return
        out = self.read_all(s, label, IDLE_TIMEOUT_MS / 1000 + 5)
        statuses = [x.status for x in out if x != "timeout"]
        if not statuses and out and out[-1] == "timeout":
            self.finding("hang", label, "a stalled body got no 408 within the idle timeout (%d ms) + 5 s" % IDLE_TIMEOUT_MS)
        elif statuses and statuses[0] != 408:
            self.finding("status", label, "a stalled body answered %r, expected 408" % statuses)

    def case_pipeline(self):
        reqs = [self.valid_request() for _ in range(self.rng.randint(2, 8))]
        reqs = [r for r in reqs if r.key not in ("pools.create",)]
        if not reqs:
            return
        out = self.exchange(reqs, "pipeline")
        for req, r in zip(reqs, out):
            self.after_valid(req, r)

    def case_garbage(self):
        rng = self.rng
        how = rng.choice(["random", "printable", "lines", "mutated", "mutated", "h2", "versions", "nul_head"])
        if how == "random":
            data = rng.randbytes(rng.choice([1, 10, 100, 5000, 70000]))
        elif how == "printable":
            data = "".join(rng.choice("GETPOST /?&=%:\r\n HTTP/1.1abc") for _ in range(rng.randint(1, 500))).encode()
        elif how == "lines":
            data = b"\r\n".join(rng.choice([b"GET / HTTP/1.1", b"Host: x", b"", b":", b"a:b", b"\t", b" x", b"X-A: b",
                                            b"GET /healthz HTTP/1.1", b"\xff\xfe"]) for _ in range(rng.randint(1, 30))) + b"\r\n\r\n"
        elif how == "h2":
            data = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + rng.randbytes(50)
        elif how == "versions":
            data = rng.choice([b"GET /healthz HTTP/1.2\r\n\r\n", b"GET /healthz HTTP/2.0\r\n\r\n", b"GET /healthz\r\n\r\n",
                               b"GET /healthz HTTP/0.9\r\n\r\n", b"GET /healthz HTTP/1.1 extra\r\n\r\n",
                               b"GET  /healthz HTTP/1.1\r\n\r\n", b"get /healthz HTTP/1.1\r\n\r\n",
                               b"GET /healthz HTTP/1.1\n\n", b"GET /healthz HTTP/1.1\r\nHost: x\r\n x\r\n\r\n",
                               b"GET /healthz http/1.1\r\n\r\n", b"\r\n\r\nGET /healthz HTTP/1.1\r\n\r\n",
                               b"GET /healthz HTTP/1.0\r\nConnection: keep-alive\r\n\r\nGET /healthz HTTP/1.0\r\n\r\n",
                               b"CONNECT 127.0.0.1:1 HTTP/1.1\r\nHost: 127.0.0.1:1\r\n\r\n",
                               b"GET /healthz HTTP/1.1\r\nContent-Length: 0\r\nContent-Length: 0\r\n\r\n"])
        elif how == "nul_head":
            data = b"GET /healthz HTTP/1.1\r\nHost: \x00\r\n\r\n"
        else:
            req = self.valid_request()
            raw = req.raw()
            skip = len(req.method) + 1 if isinstance(req.method, str) else 0
            data = raw[:skip] + mutate_bytes(rng, raw[skip:], rng.randint(1, 4))
            if req.head:
                data = b"GET" + data[4:] if data.startswith(b"HEAD") else data
        s = self.connect()
        label = "(raw %s)" % how
        try:
            self.maybe_warm(s)
            self.send(s, data)
            if rng.random() < 0.7:
                s.shutdown(socket.SHUT_WR)
                out = self.read_all(s, label, BOUND_S + 5)
                if out and out[-1] == "timeout":
                    self.finding("hang", label, "no end of the connection %d s after the client half-closed" % (BOUND_S + 5))
            else:
                out = self.read_all(s, label, HEADER_TIMEOUT_MS / 1000 + IDLE_TIMEOUT_MS / 1000 + 5)
                if out and out[-1] == "timeout":
                    self.finding("hang", label, "garbage neither answered nor timed out")
        except OSError:
            pass
        finally:
            s.close()

    def case_limits(self):
        rng = self.rng
        how = rng.choice(["many_headers", "big_header", "big_block", "long_url", "long_method", "header_100", "trailers",
                          "head_then_error"])
        if how == "head_then_error":
            # A HEAD answered, then a malformed GET on the same connection: the GET's error answer has its body.
            first = self.make("HEAD", rng.choice(["/healthz", "/metrics", "/pools"]))
            bad = rng.choice([b"GET /x HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n",
                              b"GET /x HTTP/1.1\r\nX: a\x00b\r\n\r\n", b"GET /" + b"u" * 9000 + b" HTTP/1.1\r\n\r\n",
                              b"GET /x HTTP/1.1\r\nX: " + b"h" * 70000 + b"\r\n\r\n",
                              b"GET /x HTTP/1.1\r\nContent-Length: zz\r\n\r\n"])
            second = Req("GET", "/x", key="(raw after HEAD)", allowed=PROTO)
            second.set_raw(bad)
            self.exchange([first, second], "pipeline")
            return
        if how == "many_headers":
            n = rng.choice([99, 100, 101, 1000])
            hdrs = [("X-H%d" % i, "v") for i in range(n - 1)]
            req = self.make("GET", "/healthz", hdrs, mutated=True, add_auth=False)
            if n > 100:
                req.allowed = {(431, "RequestHeaderFieldsTooLarge")}
        elif how == "header_100":
            req = self.make("GET", "/pools", [("X-H%d" % i, "v") for i in range(97)], mutated=False)
        elif how == "big_header":
            n = rng.choice([60000, 65400, 65536, 70000, 1 << 20])
            req = self.make("GET", "/healthz", [("X-Big", "b" * n)], mutated=True, add_auth=False)
            if n > 65536:
                req.allowed = {(431, "RequestHeaderFieldsTooLarge")}
        elif how == "big_block":
            req = self.make("GET", "/metrics", [("X-%d" % i, "c" * 1000) for i in range(rng.choice([60, 70]))], mutated=True, add_auth=False)
        elif how == "long_url":
            n = rng.choice([8000, 8150, 8192, 8193, 9000, 100000])
            t = "/healthz?" + "a" * (n - 9)
            req = self.make("GET", t, mutated=True)
            if n > 8192:
                req.allowed = {(414, "UriTooLong")}
        elif how == "long_method":
            req = Req("X" * rng.choice([20, 100, 10000]), "/healthz", [("Host", "x")], key="(raw long method)",
                      allowed={(400, "BadRequest"), (405, "MethodNotAllowed")})
        else:
            body = b'{"properties":{"code":"1+1"}}'
            chunks = b"%x\r\n%s\r\n0\r\n" % (len(body), body) + b"".join(b"X-T%d: %s\r\n" % (i, b"t" * 100) for i in range(rng.choice([5, 700]))) + b"\r\n"
            pool = self.pick_pool()
            req = self.make("POST", self.target(pool, "code/execute", self.pick_id(pool)), [("Transfer-Encoding", "chunked")],
                            framing="none", mutated=True, body_ok=True)
            req.set_raw(req.raw() + chunks)
        self.exchange([req], rng.choice(["plain", "halfclose", "warm"]))

    def case_interleave(self):
        """Two requests on two connections whose outcomes depend on each other's order."""
        rng = self.rng
        how = rng.choice(["upload_vs_delete", "exec_vs_delete", "create_vs_delete", "slow_upload", "exec_vs_pool_delete",
                          "download_vs_delete", "slow_reader"])
        pool = self.pick_pool()
        if how == "slow_reader":
            # Many answers pipelined to a client that does not read for a while (the server stops reading it at 4 MiB
            # pending), then reads them all.
            reqs = [self.make("GET", rng.choice(["/metrics", "/openapi.json"]), check=None) for _ in range(rng.randint(10, 60))]
            s = self.connect()
            try:
                self.send(s, b"".join(r.raw() for r in reqs))
                time.sleep(rng.choice([0.2, 1.0]))
                reader = Reader(s)
                for req in reqs:
                    if self.read_one(reader, req, time.monotonic()) is None:
                        break
            except OSError:
                pass
            finally:
                s.close()
            return
        if how == "download_vs_delete":
            if not self.pools.get(pool):
                return self.case_valid()
            ident = self.pick_id(pool, fresh=0)
            data = rng.randbytes(rng.choice([1 << 20, 3 << 20]))
            boundary, body = multipart(rng, [(disposition(b"file", b"big.bin"), data)])
            up = self.make("POST", self.target(pool, "files", ident), [("Content-Type", "multipart/form-data; boundary=" + boundary)],
                           body, name_ok=True, body_ok=True)
            up.allowed.discard((404, "FileNotFound"))
            r = self.exchange([up])[0]
            if r is None or r.status != 200:
                return
            down = self.make("GET", self.target(pool, "files/content/big.bin", ident), name_ok=True)
            s = self.connect()
            try:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16384)
                self.send(s, down.raw())
                time.sleep(0.05)
                first = s.recv(4096)  # the head and the first bytes; the rest waits in the server
                self.forget_session(pool, ident)
                self.exchange([self.make("DELETE", self.target(pool, "session", ident))])
                reader = Reader(s)
                reader.buf += first
                try:
                    resp = reader.read_response(False, time.monotonic() + BOUND_S)
                    # The whole file came, or the session ended first: then the connection is cut (README: a
                    # streamed answer that cannot be completed closes the connection; the client sees it short).
                    if resp.status == 200 and resp.body != data:
                        self.finding("content", down.key, "download cut by a session delete completed with other bytes", resp)
                except Malformed as e:
                    if "bytes into a" not in str(e):
                        self.finding("malformed", down.key, str(e))
                except Timeout:
                    self.finding("hang", down.key, "a download whose session was deleted neither finished nor was cut")
                except Closed:
                    pass
            except OSError:
                pass
            finally:
                s.close()
            return
        if how == "exec_vs_pool_delete":
            live = [n for n in FUZZ_POOLS if self.pools.get(n)]
            if not live:
                return self.case_pool_admin()
            pool = rng.choice(live)
            ident = self.pick_id(pool, fresh=0)
            body = ({"shellCommand": "sleep 0.3; echo done"} if self.pool_types.get(pool) == "Shell"
                    else {"code": "import time\ntime.sleep(0.3)\n1", "timeoutInSeconds": 5})
            ex = self.make("POST", self.target(pool, "code/execute", ident), self.json_headers(), json.dumps(body).encode(),
                           body_ok=True, note="interleaved with DELETE of its pool")
            # README: sessions end when their pool is deleted; a request waiting for the pool answers 503.
            ex.allowed |= HOSTILE_500 | SESSION_ENDED | {(503, "ServiceUnavailable"), (404, "PoolNotFound")}
            s = self.connect()
            try:
                self.send(s, ex.raw())
                time.sleep(rng.choice([0, 0.05, 0.15]))
                r = self.exchange([self.make("DELETE", "/pools/" + pool)])[0]
                if r is not None and r.status == 204:
                    self.pools[pool] = False
                    for k in [k for k in self.files if k[0] == pool]:
                        del self.files[k]
                    self.executions = [e for e in self.executions if e[0] != pool]
                self.read_one(Reader(s), ex, time.monotonic())
            except OSError:
                pass
            finally:
                s.close()
            return
        if how == "create_vs_delete":
            if self.pool_mode:
                name = rng.choice(FUZZ_POOLS)
                if self.pools.get(name) is not False:
                    return self.case_pool_admin()
                body = json.dumps(safe_settings(rng, name)).encode()
            else:
                name = "fz-cc"
                body = json.dumps({"name": name, "containerType": "CustomContainer", "image": "/nonexistent/fuzz-image",
                                   "targetPort": 8080, "readySessionInstances": 0}).encode()
            create = self.make("POST", "/pools", self.json_headers(), body, note="known:pools.create")
            create.allowed = {(201, None), (409, "PoolDeleted"), (409, "PoolExists")}
            s = self.connect()
            self.send(s, create.raw())
            time.sleep(rng.choice([0, 0.01, 0.1, 0.5]))
            self.pools[name] = None
            delete = self.make("DELETE", "/pools/" + name)
            delete.allowed = {(204, None), (404, "PoolNotFound")}
            self.exchange([delete])
            r = self.read_one(Reader(s), create, time.monotonic())
            s.close()
            self.resolve_pools()
            if r is not None and r.status == 201 and self.pools.get(name):
                self.exchange([self.make("DELETE", "/pools/" + name)])
                self.pools[name] = False
            return
        ident = self.pick_id(pool, fresh=0)
        if how in ("upload_vs_delete", "slow_upload"):
            data = rng.randbytes(rng.choice([1000, 200000, 2 << 20]))
            boundary, body = multipart(rng, [(disposition(b"file", b"slow.bin"), data)])
            up = self.make("POST", self.target(pool, "files", ident), [("Content-Type", "multipart/form-data; boundary=" + boundary)],
                           body, name_ok=True, body_ok=True, note="interleaved with a session delete")
            up.allowed |= HOSTILE_500 | SESSION_ENDED | {(404, "FileNotFound")}
            raw = up.raw()
            cut = rng.randint(len(raw) // 4, len(raw) - 1)
            s = self.connect()
            try:
                self.send(s, raw[:cut])
                if how == "upload_vs_delete":
                    self.forget_session(pool, ident)
                    d = self.make("DELETE", self.target(pool, "session", ident))
                    self.exchange([d])
                else:
                    time.sleep(rng.choice([0.1, 0.5, 1.5]))
                self.send(s, raw[cut:])
                r = self.read_one(Reader(s), up, time.monotonic())
            except OSError:
                r = None
            finally:
                s.close()
            return
        # exec_vs_delete: an execution in flight while its session is stopped.
        body = {"code": "import time\ntime.sleep(0.3)\n1", "timeoutInSeconds": 5}
        ex = self.make("POST", self.target(pool, "code/execute", ident), self.json_headers(), json.dumps(body).encode(),
                       body_ok=True, note="interleaved with stopSession")
        ex.allowed |= HOSTILE_500 | SESSION_ENDED
        s = self.connect()
        try:
            self.send(s, ex.raw())
            time.sleep(0.1)
            self.forget_session(pool, ident)
            self.exchange([self.make("POST", self.target(pool, ".management/stopSession", ident))])
            self.read_one(Reader(s), ex, time.monotonic())
        except OSError:
            pass
        finally:
            s.close()

    def resolve_pools(self):
        """Asks the server which fuzz pools exist (after a race made it uncertain)."""
        try:
            r = self.exchange([self.make("GET", "/pools", check=None)])[0]
            if r is None or r.status != 200:
                return
            live = {p["name"]: p.get("provisioningState") for p in load_json(r.body)["value"]}
        except (ValueError, KeyError, TypeError):
            return
        for n in list(self.pools):
            if n == "default":
                continue
            st = live.get(n)
            self.pools[n] = True if st == "Succeeded" else (None if st == "InProgress" else False)
        for n in live:
            if n not in self.pools and n != "default":
                self.pools[n] = True if live[n] == "Succeeded" else None
                if not self.pool_mode:
                    self.finding("safety", "pools.create", "a pool %r exists in --no-pool mode (a settings body the fuzzer "
                                 "thought invalid was accepted)" % n)
                    self.exchange([self.make("DELETE", "/pools/" + n)])
                    self.pools[n] = False

    def case_pool_admin(self):
        """Creates, updates and deletes the fuzz pools with valid settings (pool mode), or probes pools that cannot
        start (no-pool mode: a CustomContainer with a missing image is refused before any sandbox)."""
        rng = self.rng
        if not self.pool_mode:
            body = {"name": "fz-cc", "containerType": "CustomContainer",
                    "image": rng.choice(["/nonexistent/fuzz-image", "/dev/null", "/proc/self/fd/0", "relative/path", "/"]),
                    "targetPort": rng.randint(1, 65535), "readySessionInstances": 0, "maxConcurrentSessions": 1}
            if body["image"] in ("/dev/null", "/proc/self/fd/0", "/"):
                body["image"] = "/nonexistent/fuzz-" + str(rng.randint(0, 9))
            req = self.make("POST", "/pools", self.json_headers(), json.dumps(body).encode(), note="known:pools.create")
            req.allowed = {(400, "InvalidPoolSettings"), (409, "PoolExists")}
            r = self.exchange([req])[0]
            if r is not None and r.status == 201:
                self.finding("safety", "pools.create", "a CustomContainer pool with a missing image was created", r)
                self.exchange([self.make("DELETE", "/pools/fz-cc")])
            return
        name = rng.choice(FUZZ_POOLS)
        state = self.pools.get(name)
        if state is None:
            self.resolve_pools()
            state = self.pools.get(name)
        if state is False:
            if sum(1 for n in FUZZ_POOLS if self.pools.get(n)) >= 2:
                return
            settings = safe_settings(rng, name)
            req = self.make("POST", "/pools", self.json_headers(), json.dumps(settings).encode(), body_ok=True,
                            body_code="InvalidPoolSettings", check=lambda r: check_pool(load_json(r.body)))
            req.allowed -= {(409, "PoolExists")}
            r = self.exchange([req])[0]
            if r is not None and r.status == 201:
                self.pools[name] = True
                self.pool_types[name] = load_json(r.body).get("containerType")
                self.ids[name] = ["fz-%d" % i for i in range(3)]
            elif r is None:
                self.pools[name] = None
            return
        if state is True:
            if rng.random() < 0.5:
                upd = {rng.choice(["maxConcurrentSessions", "cooldownPeriodInSeconds", "allocationWaitInMilliseconds",
                                   "executionTimeoutCapInSeconds"]): rng.randint(2, 5)}
                if rng.random() < 0.3:
                    upd = {"properties": {"scaleConfiguration": {"readySessionInstances": rng.randint(0, 1),
                                                                 "maxConcurrentSessions": rng.randint(1, 3)}}}
                if rng.random() < 0.2:
                    upd = {"containerType": "Shell" if self.pool_types.get(name) == "PythonLTS" else "PythonLTS"}
                    req = self.make(rng.choice(["PUT", "PATCH"]), "/pools/" + name, self.json_headers(),
                                    json.dumps(upd).encode(), body_ok=False, body_code="InvalidPoolSettings")
                else:
                    req = self.make(rng.choice(["PUT", "PATCH"]), "/pools/" + name, self.json_headers(),
                                    json.dumps(upd).encode(), body_ok=True, body_code="InvalidPoolSettings",
                                    check=lambda r: check_pool(load_json(r.body)))
                    # readySessionInstances over maxConcurrentSessions is refused
                    req.allowed |= {(400, "InvalidPoolSettings")}
                self.exchange([req])
                return
            req = self.make("DELETE", "/pools/" + name)
            r = self.exchange([req])[0]
            if r is not None and r.status == 204:
                self.pools[name] = False
                for k in [k for k in self.files if k[0] == name]:
                    del self.files[k]
                self.executions = [e for e in self.executions if e[0] != name]
            elif r is None:
                self.pools[name] = None

    def case_session_gc(self):
        """Ends a session so that the pool does not stay full (pool mode)."""
        pool = self.rng.choice([n for n, e in self.pools.items() if e] or ["default"])
        ident = self.pick_id(pool, fresh=0)
        self.forget_session(pool, ident)
        self.exchange([self.make("DELETE", self.target(pool, "session", ident))])

    # ---- the run ----
    def one_case(self):
        rng = self.rng
        kinds = ["valid", "roundtrip", "mutated", "hostile_json", "hostile_multipart", "framing", "pipeline",
                 "garbage", "limits", "interleave", "pool_admin", "session_gc"]
        weights = [32, 4, 20, 12, 8, 12, 5, 5, 3, 3, 3, 3] if self.pool_mode else [30, 0, 22, 14, 8, 12, 5, 6, 4, 1, 1, 0]
        kind = rng.choices(kinds, weights)[0]
        self.case_kinds[kind] += 1
        self.case_no += 1
        self.case_sent = []
        getattr(self, "case_" + kind)()
        self.recent_cases.append((self.case_no, kind, [bytes(b) for b in self.case_sent]))

    def after_case(self):
        data = self.new_stderr()
        if data and SANITIZER_RE.search(data):
            i = SANITIZER_RE.search(data).start()
            self.finding("sanitizer", "(server stderr)", data[max(0, i - 200):i + 3000].decode("utf-8", "replace"))
        if not self.alive():
            rc = self.srv.proc.returncode
            self.finding("crash", "(server)", "the server exited with %s during case %d; last cases: %s" % (
                rc, self.case_no, "; ".join("#%d %s %s" % (n, k, self.fmt_sent(s, 300)) for n, k, s in self.recent_cases)))
            self.stop_reason = "server died"

    def run(self):
        self.t_start = time.monotonic()
        self.start()
        if self.pool_mode:
            self.wait_pool_ready(60)
            r = self.exchange([self.make("PATCH", "/pools/default", self.json_headers(),
                                         json.dumps({"allocationWaitInMilliseconds": 3000}).encode(), body_ok=True,
                                         body_code="InvalidPoolSettings")])[0]
            if r is None or r.status != 200:
                self.log("could not shorten the default pool's allocation wait")
        time.sleep(1.5)
        self.base = self.proc_counts()
        self.base_fds = self.fd_listing()
        self.log("baseline: %d fds, %d threads, RSS %d KiB" % self.base)
        self.rss.append((0.0, self.base[2]))
        deadline = time.monotonic() + self.args.seconds
        last_sample = time.monotonic()
        last_report = time.monotonic()
        interval = 1.0 / self.args.rate
        try:
            while time.monotonic() < deadline and not self.stop_reason:
                t0 = time.monotonic()
                try:
                    self.one_case()
                except (OSError, EOFError) as e:
                    if self.alive():
                        self.log("case %d: client error %r (not a finding by itself)" % (self.case_no, e))
                self.after_case()
                now = time.monotonic()
                if now - last_sample > 5:
                    c = self.proc_counts()
                    if c:
                        self.rss.append((now - self.t_start, c[2]))
                    last_sample = now
                if now - last_report > 30:
                    self.log("%d cases, %d answers, %d findings; fds/threads/RSS %s" % (
                        self.case_no, self.requests, len(self.findings), self.proc_counts()))
                    last_report = now
                spent = time.monotonic() - t0
                if spent < interval:
                    time.sleep(interval - spent)
        except KeyboardInterrupt:
            self.log("interrupted")
        self.finish()

    def wait_pool_ready(self, timeout):
        """Until the default pool has its ready sandboxes and nothing else (metrics)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            m = self.metrics()
            if m is not None:
                ready = m.get(("default", "Ready"), 0)
                others = sum(v for (p, st), v in m.items() if not (p == "default" and st == "Ready"))
                if ready >= 2 and others == 0:
                    return True
            time.sleep(0.5)
        return False

    def metrics(self):
        try:
            s = socket.create_connection(("127.0.0.1", self.port), timeout=5)
            s.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            r = Reader(s).read_response(False, time.monotonic() + 10)
            s.close()
        except (OSError, Timeout, Closed, Malformed):
            return None
        out = {}
        for line in r.body.decode("utf-8", "replace").splitlines():
            m = re.match(r'sandpool_pool_sessions\{pool="([^"]+)",state="(\w+)"\} (\d+)', line)
            if m:
                out[(m.group(1), m.group(2))] = int(m.group(3))
        return out

    def finish(self):
        for s, _, _ in self.keepalive:
            s.close()
        self.keepalive = []
        self.end_checks = []
        if self.alive():
            self.case_sent = []
            self.quiesce()
            self.after_case()
        elapsed = time.monotonic() - self.t_start
        rc = None
        if self.alive():
            inflight = self.in_flight_at_shutdown()
            t0 = time.monotonic()
            self.srv.signal(signal.SIGTERM)
            for req, s in inflight:
                # README: requests in flight finish (their answers say Connection: close) within the shutdown timeout.
                r = self.read_one(Reader(s), req, time.monotonic())
                if r is not None and (r.header("Connection") or "").lower() != "close":
                    self.finding("protocol", req.key, "an answer finished during the drain without Connection: close", r)
                s.close()
            try:
                self.srv.proc.wait(timeout=40)  # harness's stop() would signal again: a second signal cuts the drain
            except subprocess.TimeoutExpired:
                self.finding("exit", "(server)", "still running 40 s after SIGTERM")
            rc = self.srv.stop(timeout=5)
            self.end_checks.append("SIGTERM (%d answers pending, a head half-sent): exit status %s after %.1f s" % (
                len(inflight), rc, time.monotonic() - t0))
            if rc != 0:
                self.finding("exit", "(server)", "SIGTERM: exit status %s, expected 0" % rc)
        else:
            self.srv.stop(timeout=5)
        for s in self.held:
            s.close()
        self.held = []
        self.new_stderr()
        with open(self.srv.stderr_path, "rb") as f:
            log = f.read()
        m = SANITIZER_RE.search(log)
        if m and not any(f.kind == "sanitizer" for f in self.findings):
            self.finding("sanitizer", "(server stderr)", log[max(0, m.start() - 200):m.start() + 3000].decode("utf-8", "replace"))
        if b"did not close cleanly" in log:
            self.finding("exit", "(server)", "the log says the loop did not close cleanly")
        if self.args.server_log:
            shutil.copyfile(self.srv.stderr_path, self.args.server_log)
        self.server_log_text = log
        try:
            self.srv.proc.stdout.close()
        except OSError:
            pass
        self.report(elapsed)
        self.srv.dir.cleanup()
        os.unlink(self.access_log)

    def in_flight_at_shutdown(self):
        """Requests under way when SIGTERM comes: an execution (pool mode), and a head left half-sent."""
        out = []
        self.case_sent = []
        try:
            half = self.connect()
            self.send(half, b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
            self.held.append(half)
            if self.pool_mode:
                req = self.make("POST", "/code/execute?identifier=fuzz-0", self.json_headers(),
                                json.dumps({"code": "import time\ntime.sleep(0.5)\n'drained'"}).encode(), body_ok=True,
                                note="in flight at SIGTERM")
                req.allowed = {(200, None)}
                s = self.connect()
                self.send(s, req.raw())
                time.sleep(0.1)
                out.append((req, s))
        except OSError as e:
            self.log("could not start the requests in flight at shutdown: %r" % e)
        return out

    def quiesce(self):
        """Ends what the fuzzer made (fuzz pools, sessions), waits for the server to settle, compares its resources."""
        t0 = time.monotonic()
        if self.pool_mode:
            for n in list(self.pools):
                if n != "default":
                    self.exchange([self.make("DELETE", "/pools/" + n, note="cleanup")])
            self.log("cleanup: ending sessions")
            r = self.exchange([self.make("GET", "/listSessions")])[0]
            try:
                idents = [s["identifier"] for s in load_json(r.body)["sessions"]]
            except (ValueError, KeyError, TypeError, AttributeError):
                idents = []
            for ident in idents:
                self.exchange([self.make("DELETE", "/session?identifier=" + q(ident), ident_ok=True)])
            if not self.wait_pool_ready(90):
                self.end_checks.append("the default pool did not settle to 2 ready sandboxes within 90 s: %r" % self.metrics())
        # Connections linger up to 1 s after errors and idle ones last IDLE_TIMEOUT_MS: wait them out.
        base_fds, base_threads, base_rss = self.base
        deadline = time.monotonic() + IDLE_TIMEOUT_MS / 1000 + 25
        c = self.proc_counts()
        while time.monotonic() < deadline:
            c = self.proc_counts()
            if c and c[0] <= base_fds and c[1] <= base_threads:
                break
            time.sleep(0.5)
        self.end_counts = c
        if c is None:
            return
        self.rss.append((time.monotonic() - self.t_start, c[2]))
        self.end_checks.append("descriptors %d → %d, threads %d → %d, RSS %d → %d KiB (settled in %.1f s)" % (
            base_fds, c[0], base_threads, c[1], base_rss, c[2], time.monotonic() - t0))
        now_fds = self.fd_listing()
        diff = {k: now_fds.get(k, 0) - self.base_fds.get(k, 0) for k in set(now_fds) | set(self.base_fds)
                if now_fds.get(k, 0) != self.base_fds.get(k, 0)}
        if diff:
            self.end_checks.append("descriptor kinds that changed: %r; sockets: %s" % (diff, self.socket_states()))
        if c[0] > base_fds + 2:
            self.finding("leak", "(server)", "descriptors %d at the end vs %d at the start: %r" % (c[0], base_fds, diff))
        if c[1] > base_threads:
            self.finding("leak", "(server)", "threads %d at the end vs %d at the start" % (c[1], base_threads))
        # RSS: the last third of the run against the first (after warm-up); ASan's quarantine (256 MiB) grows first.
        samples = [kb for _, kb in self.rss]
        if len(samples) >= 6:
            third = len(samples) // 3
            early = max(samples[1:third + 1])
            late = max(samples[-third:])
            allowed = (400 << 10) if self.asan else (64 << 10)
            self.end_checks.append("RSS early max %d KiB, late max %d KiB (growth allowed %d KiB)" % (early, late, allowed))
            if late > early + allowed:
                self.finding("leak", "(server)", "RSS grew from %d KiB to %d KiB over the run" % (early, late))

    def socket_states(self):
        """The server's TCP sockets (state local remote), from /proc/net/tcp."""
        states = {"01": "ESTABLISHED", "06": "TIME_WAIT", "07": "CLOSE", "08": "CLOSE_WAIT", "0A": "LISTEN",
                  "04": "FIN_WAIT1", "05": "FIN_WAIT2", "09": "LAST_ACK", "0B": "CLOSING"}
        inodes = set()
        try:
            for fd in os.listdir("/proc/%d/fd" % self.pid):
                m = re.match(r"socket:\[(\d+)\]", os.readlink("/proc/%d/fd/%s" % (self.pid, fd)))
                if m:
                    inodes.add(m.group(1))
            out = []
            with open("/proc/%d/net/tcp" % self.pid) as f:
                for line in f.readlines()[1:]:
                    parts = line.split()
                    if parts[9] in inodes:
                        port = lambda a: int(a.split(":")[1], 16)
                        out.append("%s %d->%d" % (states.get(parts[3], parts[3]), port(parts[1]), port(parts[2])))
            return ", ".join(out)
        except OSError as e:
            return "(%s)" % e

    def fd_listing(self):
        out = collections.Counter()
        try:
            for fd in os.listdir("/proc/%d/fd" % self.pid):
                try:
                    out[re.sub(r"\d+", "N", os.readlink("/proc/%d/fd/%s" % (self.pid, fd)))] += 1
                except OSError:
                    pass
        except OSError:
            pass
        return dict(out)

    def report(self, elapsed):
        print()
        print("=" * 100)
        print("api_fuzz summary: %s, %s, seed %s, %.0f s, %d cases, %d answers checked (%.1f/s)" % (
            "ASan/UBSan" if self.asan else "release", "--pool" if self.pool_mode else "--no-pool", self.args.seed,
            elapsed, self.case_no, self.requests, self.requests / max(elapsed, 1)))
        print("\ncases: " + ", ".join("%s %d" % kv for kv in sorted(self.case_kinds.items())))
        print("\nanswers per status: " + ", ".join("%s: %d" % (k, v) for k, v in sorted(self.stats_status.items(), key=lambda kv: str(kv[0]))))
        print("\nanswers per route (and status):")
        for label, n in sorted(self.stats_route.items()):
            per = sorted(((st, c) for (lb, st), c in self.stats_route_status.items() if lb == label), key=lambda x: str(x[0]))
            print("  %-44s %6d   %s" % (label, n, " ".join("%s:%d" % x for x in per)))
        print("\nend checks:")
        for line in self.end_checks:
            print("  " + line)
        errors = collections.Counter()
        for line in self.server_log_text.decode("utf-8", "replace").splitlines():
            m = re.match(r"\S+ (error|warn) (.*)", line)
            if m:
                errors[m.group(1) + ": " + re.sub(r"\d+", "N", m.group(2))[:140]] += 1
        if errors:
            print("\nserver log warnings/errors (not findings by themselves):")
            for k, v in errors.most_common(15):
                print("  %5d  %s" % (v, k))
        if self.allowed_5xx:
            print("\n5xx answers allowed by their case (provoked on purpose):")
            for (label, st, code, why), n in sorted(self.allowed_5xx.items()):
                print("  %5d  %s %d %s (%s)" % (n, label, st, code, why or "in ALLOWED for the route"))
        if self.known:
            print("\nknown deviations (documented; not failing the run):")
            for k, n in self.known.items():
                sent, resp, why = self.known_examples[k]
                print("  %s %d %s: %d times. %s\n    e.g. sent %s\n    got %s" % (k[0], k[1], k[2], n, why,
                                                                                self.fmt_sent(sent, 400), resp))
        print("\nfindings: %d (distinct %d)" % (sum(self.finding_keys.values()), len(self.finding_keys)))
        for i, f in enumerate(self.findings, 1):
            total = self.finding_keys[self.finding_key(f.kind, f.route, f.detail)]
            print("\n#%d [%s] %s (case %d%s)\n  %s" % (i, f.kind, f.route, f.case, ", %d like it" % total if total > 1 else "", f.detail))
            if f.response:
                print("  answer: %s" % f.response)
            print("  sent: %s" % self.fmt_sent(f.sent))
            if self.args.findings_dir:
                os.makedirs(self.args.findings_dir, exist_ok=True)
                for j, b in enumerate(f.sent):
                    with open(os.path.join(self.args.findings_dir, "finding-%d-conn-%d.bin" % (i, j)), "wb") as out:
                        out.write(b)
        if self.args.server_log:
            print("\nserver stderr: %s" % self.args.server_log)
        print("=" * 100)


PY_SNIPPETS = [
    "1+1", "print('hello')", "x = 41\nx + 1", "import os\nsorted(os.listdir('.'))", "raise ValueError('boom')",
    "'\u00e9\u4e2d' * 3", "float('nan')", "float('inf')", "b'\\xff\\x00'", "None", "print('a' * 100000)",
    "import sys\nprint('err', file=sys.stderr)", "open('made.txt', 'w').write('hi')", "[1, 2.5, 'x', None, True]",
    "{'a': 1}", "import time\ntime.sleep(0.2)\n'slept'", "def f(:\n  pass", "1/0", "import numpy as np\nnp.arange(5).sum()",
    "import json\njson.dumps({'k': [1, 2]})", "print('\\x00\\x01\\x7f')", "print('\\udcff')", "y", "10**400",
    "import matplotlib\nmatplotlib.use('Agg')\nimport matplotlib.pyplot as plt\nplt.plot([1, 2, 3])\nplt.show()",
    "import sys\nsys.exit(3)", "while True:\n    pass", "x = bytearray(50 * 1024 * 1024)\nlen(x)",
    "import os\nos.getcwd()", "print(open('/etc/hostname').read() if __import__('os').path.exists('/etc/hostname') else 'none')",
    "10**20", "2**64", "-2**63",
]

FAST_SNIPPETS = [c for c in PY_SNIPPETS if "while True" not in c]
# API.md §3 <R> for cells whose value does not depend on the session: the result the answer must carry.
EXPECTED_RESULT = {"1+1": 2, "x = 41\nx + 1": 42, "10**20": 10 ** 20, "10**400": 10 ** 400, "2**64": 2 ** 64,
                   "-2**63": -2 ** 63, "None": "", "float('nan')": "nan", "float('inf')": "inf", "'\u00e9\u4e2d' * 3": "\u00e9\u4e2d" * 3,
                   "print('hello')": "", "1/0": "", "[1, 2.5, 'x', None, True]": "[1, 2.5, 'x', None, True]"}


def main():
    ap = argparse.ArgumentParser(description="Black-box fuzzer of sandpool's HTTP API (see the file's docstring).")
    ap.add_argument("build_dir")
    ap.add_argument("--seconds", type=float, default=300)
    ap.add_argument("--seed", type=int, default=None)
    g = ap.add_mutually_exclusive_group()
    g.add_argument("--pool", dest="pool", action="store_true", default=True,
                   help="a PythonLTS default pool and fuzz pools: real sessions (default; release build)")
    g.add_argument("--no-pool", dest="pool", action="store_false",
                   help="--no-default-pool and no sandbox ever (for the ASan build)")
    ap.add_argument("--rate", type=float, default=30, help="at most this many cases a second (default 30)")
    ap.add_argument("--no-auth", dest="auth", action="store_false", default=True,
                    help="no --api-key (by default the server has one and some requests carry a wrong token)")
    ap.add_argument("--server-log", help="copy the server's stderr here at the end")
    ap.add_argument("--findings-dir", help="write the bytes sent for each finding here")
    args = ap.parse_args()
    if args.seed is None:
        args.seed = int.from_bytes(os.urandom(4), "little")
    binary = os.path.join(args.build_dir, "src", "sandpool")
    if not os.access(binary, os.X_OK):
        print("api_fuzz: no executable %s" % binary, file=sys.stderr)
        return 2
    harness.BINARY = os.path.abspath(binary)
    signal.signal(signal.SIGPIPE, signal.SIG_IGN) if hasattr(signal, "SIGPIPE") else None
    fz = Fuzzer(args)
    fz.run()
    hard = [f for f in fz.findings]
    return 1 if hard else 0


if __name__ == "__main__":
    sys.exit(main())
