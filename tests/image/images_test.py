"""Tests for tools/make-test-images.py and tools/test-images/app.py.

Usage: images_test.py MAKE_TEST_IMAGES_PY APP_PY [UNIT_IMAGE_EXE]

Builds the images twice (digests must match), validates every layout and tarball against
the OCI image-spec rules the importer relies on, has import_image accept them (through
UNIT_IMAGE_EXE's "built test images" case), runs the images' entrypoints in a chroot when
root, and exercises every app.py route over loopback. Exits 1 on any failure.
"""
import base64
import gzip
import hashlib
import http.client
import io
import json
import os
import shutil
import socket
import struct
import subprocess
import sys
import tarfile
import tempfile
import time

kOciManifest = "application/vnd.oci.image.manifest.v1+json"
kOciConfig = "application/vnd.oci.image.config.v1+json"
kOciIndex = "application/vnd.oci.image.index.v1+json"
kLayerTypes = {"application/vnd.oci.image.layer.v1.tar+gzip": "gzip",
               "application/vnd.oci.image.layer.v1.tar+zstd": "zstd"}
kMtime = 946684800
kWsGuid = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

make_py, app_py = os.path.abspath(sys.argv[1]), os.path.abspath(sys.argv[2])
unit_image = os.path.abspath(sys.argv[3]) if len(sys.argv) > 3 else None
work = tempfile.mkdtemp(prefix="sp-images-test-")
out = os.path.join(work, "a")
failures = []


def check(cond, what):
    if not cond:
        raise AssertionError(what)


def run_test(fn):
    try:
        fn()
        print("ok", fn.__name__, flush=True)
    except Exception as e:  # any exception fails the test, the others still run
        failures.append(fn.__name__)
        print("FAIL %s: %s: %s" % (fn.__name__, type(e).__name__, e), flush=True)


def sha256(data):
    return hashlib.sha256(data).hexdigest()


def read(path):
    with open(path, "rb") as f:
        return f.read()


def tree_digests(root):
    found = {}
    for dirpath, _, names in os.walk(root):
        for n in names:
            p = os.path.join(dirpath, n)
            found[os.path.relpath(p, root)] = sha256(read(p))
    return found


def build(dest):
    subprocess.run(["/usr/bin/python3", make_py, dest], check=True)


# --- images -----------------------------------------------------------------------------

def test_build_is_deterministic():
    other = os.path.join(work, "b")
    build(other)
    a, b = tree_digests(out), tree_digests(other)
    check(len(a) > 0, "nothing built")
    check(a == b, "two builds differ: %s" % sorted(k for k in a.keys() | b.keys() if a.get(k) != b.get(k)))
    shutil.rmtree(other)


def decompress(data, how):
    if how == "gzip":
        return gzip.decompress(data)
    return subprocess.run(["zstd", "-d", "-q", "-c"], input=data, check=True, capture_output=True).stdout


def check_layer_tar(data, where):
    """Entries sorted, owned by 0:0, with the fixed mtime; returns the entry names."""
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        members = tar.getmembers()
    names = [m.name for m in members]
    check(names == sorted(names), where + ": entries not sorted")
    for m in members:
        check(m.uid == 0 and m.gid == 0 and m.mtime == kMtime, where + ": %s owner/mtime" % m.name)
        check(not m.name.startswith("/") and ".." not in m.name.split("/"), where + ": bad path " + m.name)
    return names


def blob(layout, desc, media_types):
    """Reads a descriptor's blob, checking its digest, size and media type."""
    check(desc["mediaType"] in media_types, "unexpected mediaType " + desc["mediaType"])
    algo, hex_ = desc["digest"].split(":")
    check(algo == "sha256", "digest algorithm " + algo)
    data = read(os.path.join(layout, "blobs", "sha256", hex_))
    check(sha256(data) == hex_, "blob %s does not match its digest" % hex_)
    check(len(data) == desc["size"], "blob %s size %d, descriptor says %d" % (hex_, len(data), desc["size"]))
    return data


def check_layout(name):
    """Validates an OCI image layout; returns (config dict, layer names lists, config bytes)."""
    layout = os.path.join(out, name)
    check(json.loads(read(os.path.join(layout, "oci-layout"))) == {"imageLayoutVersion": "1.0.0"}, "oci-layout")
    index = json.loads(read(os.path.join(layout, "index.json")))
    check(index["schemaVersion"] == 2 and index["mediaType"] == kOciIndex, "index.json header")
    check(len(index["manifests"]) == 1, "one manifest")
    manifest = json.loads(blob(layout, index["manifests"][0], [kOciManifest]))
    check(manifest["schemaVersion"] == 2 and manifest["mediaType"] == kOciManifest, "manifest header")
    config_bytes = blob(layout, manifest["config"], [kOciConfig])
    config = json.loads(config_bytes)
    check(config["os"] == "linux" and config["rootfs"]["type"] == "layers", "config os/rootfs")
    diff_ids = config["rootfs"]["diff_ids"]
    check(len(diff_ids) == len(manifest["layers"]), "diff_ids count")
    layers = []
    for desc, diff_id in zip(manifest["layers"], diff_ids):
        tar = decompress(blob(layout, desc, kLayerTypes), kLayerTypes[desc["mediaType"]])
        check("sha256:" + sha256(tar) == diff_id, "diff_id of " + desc["digest"])
        layers.append(check_layer_tar(tar, name))
    referenced = {d["digest"][7:] for d in [index["manifests"][0], manifest["config"]] + manifest["layers"]}
    check(set(os.listdir(os.path.join(layout, "blobs", "sha256"))) == referenced, "unreferenced blobs")
    return config, layers, config_bytes


def test_busybox_layout():
    config, layers, _ = check_layout("busybox-httpd")
    c = config["config"]
    check(c["Entrypoint"] == ["/bin/busybox", "httpd", "-f", "-v", "-p", "8080", "-h", "/www"], "Entrypoint")
    check(c["ExposedPorts"] == {"8080/tcp": {}} and c["Env"] == ["PATH=/bin"] and c["WorkingDir"] == "/www", "config")
    check(len(layers) == 2, "two layers")
    for path in ["bin/busybox", "bin/sh", "bin/httpd", "www/index.html", "www/cgi-bin/echo", "www/old.html"]:
        check(path in layers[0], "layer 1 lacks " + path)
    check("www/.wh.old.html" in layers[1] and "www/stale/.wh..wh..opq" in layers[1], "layer 2 whiteouts")


def test_busybox_oci_tarball():
    with tarfile.open(os.path.join(out, "busybox-httpd.oci.tar")) as tar:
        files = {m.name: sha256(tar.extractfile(m).read()) for m in tar.getmembers() if m.isfile()}
    check(files == tree_digests(os.path.join(out, "busybox-httpd")), "tarball differs from the layout")


def test_pyapp_layouts():
    config, layers, config_bytes = check_layout("pyapp")
    c = config["config"]
    check(c["Entrypoint"] == ["/usr/bin/python3", "/app/app.py"], "Entrypoint")
    check(c["Env"] == ["PORT=8080", "PYTHONDONTWRITEBYTECODE=1", "PATH=/usr/bin:/bin"], "Env")
    check(c["WorkingDir"] == "/app" and c["ExposedPorts"] == {"8080/tcp": {}} and "User" not in c, "config")
    names = set(layers[0])
    for path in ["usr/bin/python3", "usr/bin/python3.11", "usr/lib/python3.11/http/server.py",
                 "usr/lib/python3.11/lib-dynload", "lib64"]:
        check(path in names, "runtime layer lacks " + path)
    for skipped in ["usr/lib/python3.11/test", "usr/lib/python3.11/tkinter", "usr/lib/python3.11/idlelib"]:
        check(skipped not in names, "runtime layer has " + skipped)
    check(not any("__pycache__" in n for n in names), "runtime layer has __pycache__")
    check(layers[1] == ["app", "app/app.py"], "app layer: %s" % layers[1])
    if os.path.isdir(os.path.join(out, "pyapp-zstd")):
        _, _, zstd_config = check_layout("pyapp-zstd")
        check(zstd_config == config_bytes, "zstd variant has another config")
    else:
        print("note: pyapp-zstd not built (no zstd CLI)")


def test_pyapp_docker_save():
    with tarfile.open(os.path.join(out, "pyapp-docker.tar")) as tar:
        files = {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}
    manifest = json.loads(files["manifest.json"])
    check(len(manifest) == 1 and manifest[0]["RepoTags"] == ["sandpool-test/pyapp:latest"], "manifest.json")
    config_bytes = files[manifest[0]["Config"]]
    check(manifest[0]["Config"] == sha256(config_bytes) + ".json", "config file name is not its digest")
    _, _, oci_config = check_layout("pyapp")
    check(config_bytes == oci_config, "docker-save config differs from the OCI one")
    diff_ids = json.loads(config_bytes)["rootfs"]["diff_ids"]
    check([("sha256:" + sha256(files[p])) for p in manifest[0]["Layers"]] == diff_ids, "layers vs diff_ids")


def test_importer_accepts_images():
    if unit_image is None:
        print("note: no unit_image given: import_image not checked")
        return
    r = subprocess.run([unit_image, "--test-case=built test images*"], capture_output=True, text=True,
                       env=dict(os.environ, SANDPOOL_TEST_IMAGES=out))
    check(r.returncode == 0 and "1 passed" in r.stdout, "unit_image failed:\n" + r.stdout + r.stderr)


def unpack(layout_name, dest):
    """Unpacks an image's layers (regular entries only; whiteouts applied) for chroot."""
    layout = os.path.join(out, layout_name)
    index = json.loads(read(os.path.join(layout, "index.json")))
    manifest = json.loads(read(os.path.join(layout, "blobs", "sha256", index["manifests"][0]["digest"][7:])))
    for desc in manifest["layers"]:
        with tarfile.open(os.path.join(layout, "blobs", "sha256", desc["digest"][7:])) as tar:
            for m in tar.getmembers():
                base, leaf = os.path.split(m.name)
                if leaf == ".wh..wh..opq":
                    for n in os.listdir(os.path.join(dest, base)):
                        shutil.rmtree(os.path.join(dest, base, n), ignore_errors=True)
                elif leaf.startswith(".wh."):
                    os.remove(os.path.join(dest, base, leaf[4:]))
                else:
                    tar.extract(m, dest)


def test_entrypoints_in_chroot():
    if os.geteuid() != 0:
        print("note: not root: images not run in a chroot")
        return
    root = os.path.join(work, "rootfs-py")
    unpack("pyapp", root)
    app = start_app(["chroot", root, "/usr/bin/python3", "/app/app.py"])
    try:
        check(get(app.port, "/healthz") == (200, b"ok"), "pyapp /healthz in chroot")
    finally:
        app.kill()
        app.wait()
    root = os.path.join(work, "rootfs-bb")
    unpack("busybox-httpd", root)
    check(not os.path.exists(os.path.join(root, "www/old.html")), "whiteout not applied")
    port = free_port()
    httpd = subprocess.Popen(["chroot", root, "/bin/busybox", "httpd", "-f", "-p", str(port), "-h", "/www"])
    try:
        for _ in range(50):
            try:
                status, body = request(port, "POST", "/cgi-bin/echo?x=1", body=b"12345")
                break
            except ConnectionRefusedError:
                time.sleep(0.1)
        check(status == 200 and body == b"method=POST\nquery=x=1\nbody_len=5\n", "CGI answer: %r" % body)
    finally:
        httpd.kill()
        httpd.wait()


# --- app.py -----------------------------------------------------------------------------

class App:
    def __init__(self, proc, port):
        self.proc, self.port = proc, port

    def kill(self):
        self.proc.kill()

    def wait(self, timeout=10):
        return self.proc.wait(timeout)


def start_app(prefix=None):
    cmd = prefix or ["/usr/bin/python3", app_py]
    cwd = tempfile.mkdtemp(dir=work)
    proc = subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.PIPE, text=True,
                            env=dict(os.environ, PORT="0", QUIET="1", HELLO="world"))
    line = proc.stdout.readline()
    if not line.startswith("listening on "):
        proc.kill()
        proc.wait()
        raise AssertionError("first line: %r" % line)
    app = App(proc, int(line.split()[2]))
    app.cwd = cwd
    return app


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def request(port, method, path, body=None, headers=None):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request(method, path, body=body, headers=headers or {})
    resp = conn.getresponse()
    data = resp.read()
    conn.close()
    return resp.status, data


def get(port, path):
    return request(port, "GET", path)


def pattern(n):
    return bytes(i % 251 for i in range(n))


def test_app_echo_and_keepalive(app):
    conn = http.client.HTTPConnection("127.0.0.1", app.port, timeout=10)
    conn.request("PATCH", "/echo/a/b?x=1&y=2", body=b"hello", headers={"X-B": "2", "X-A": "1"})
    got = json.loads(conn.getresponse().read())
    sock = conn.sock
    check(got["method"] == "PATCH" and got["path"] == "/echo/a/b" and got["query"] == "x=1&y=2", "echo: %s" % got)
    names = [k for k, _ in got["headers"]]
    check(names.index("X-B") < names.index("X-A") and ["X-A", "1"] in got["headers"], "header order: %s" % names)
    check(got["body_len"] == 5 and got["body_sha256"] == sha256(b"hello"), "echo body")
    body = [b"abc", b"d" * 70000, b"e"]
    conn.request("POST", "/echo", body=iter(body), encode_chunked=True)
    got = json.loads(conn.getresponse().read())
    check(got["body_len"] == 70004 and got["body_sha256"] == sha256(b"".join(body)), "chunked echo")
    check(conn.sock is sock, "connection not kept alive")
    conn.request("GET", "/healthz")
    check(conn.getresponse().read() == b"ok" and conn.sock is sock, "healthz on the same connection")
    conn.close()


def test_app_raw_chunked_upload(app):
    with socket.create_connection(("127.0.0.1", app.port), timeout=10) as s:
        s.sendall(b"POST /upload HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                  b"3;ext=1\r\nabc\r\nA\r\n0123456789\r\n0\r\nX-Trailer: t\r\n\r\n"
                  b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    want = json.dumps({"len": 13, "sha256": sha256(b"abc0123456789")}).encode()
    check(want in data and data.endswith(b"ok"), "raw pipelined upload + healthz: %r" % data)


def test_app_upload_large(app):
    data = os.urandom(3 << 20)
    status, body = request(app.port, "POST", "/upload", body=data)
    check(status == 200 and json.loads(body) == {"len": len(data), "sha256": sha256(data)}, "upload CL")
    conn = http.client.HTTPConnection("127.0.0.1", app.port, timeout=10)
    conn.request("POST", "/upload", body=(data[i:i + 100000] for i in range(0, len(data), 100000)),
                 encode_chunked=True)
    check(json.loads(conn.getresponse().read()) == {"len": len(data), "sha256": sha256(data)}, "upload chunked")
    conn.close()


def test_app_bytes(app):
    for chunked in ("0", "1"):
        conn = http.client.HTTPConnection("127.0.0.1", app.port, timeout=10)
        conn.request("GET", "/bytes?n=200003&chunked=" + chunked)
        resp = conn.getresponse()
        check(resp.getheader("Transfer-Encoding") == ("chunked" if chunked == "1" else None), "framing")
        check(chunked == "1" or resp.getheader("Content-Length") == "200003", "Content-Length")
        check(resp.read() == pattern(200003), "pattern, chunked=" + chunked)
        conn.close()
    check(get(app.port, "/bytes?n=0") == (200, b""), "n=0")


def test_app_sse_timing(app):
    with socket.create_connection(("127.0.0.1", app.port), timeout=10) as s:
        s.sendall(b"GET /sse?n=4&ms=150 HTTP/1.1\r\nHost: x\r\n\r\n")
        start = time.monotonic()
        f = s.makefile("rb")
        head = b""
        while not head.endswith(b"\r\n\r\n"):
            head += f.readline()
        check(b"text/event-stream" in head and b"chunked" in head.lower(), "SSE head: %r" % head)
        events, times = [], []
        while (size := int(f.readline().strip(), 16)) > 0:
            events.append(f.read(size))
            times.append(time.monotonic() - start)
            f.readline()
        check(f.readline() == b"\r\n" and f.read() == b"", "SSE stream end then close")
    check(events == [b"data: %d\n\n" % i for i in range(4)], "events: %r" % events)
    check(times[0] < 0.12, "first event late: %.3f" % times[0])
    gaps = [b - a for a, b in zip(times, times[1:])]
    check(all(0.12 <= g < 1.0 for g in gaps), "event gaps: %s" % gaps)


def ws_send(s, opcode, payload, fin=1):
    mask = os.urandom(4)
    n = len(payload)
    size = bytes([0x80 | n]) if n < 126 else (bytes([0x80 | 126]) + struct.pack("!H", n) if n < 65536
                                             else bytes([0x80 | 127]) + struct.pack("!Q", n))
    s.sendall(bytes([(fin << 7) | opcode]) + size + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload)))


def ws_recv(f):
    b0, b1 = f.read(2)
    check(b1 & 0x80 == 0, "server frame masked")
    n = b1 & 0x7F
    if n == 126:
        n = struct.unpack("!H", f.read(2))[0]
    elif n == 127:
        n = struct.unpack("!Q", f.read(8))[0]
    return b0 >> 7, b0 & 0x0F, f.read(n)


def test_app_websocket(app):
    key = base64.b64encode(os.urandom(16)).decode()
    with socket.create_connection(("127.0.0.1", app.port), timeout=10) as s:
        s.sendall(("GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                   "Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n\r\n" % key).encode())
        f = s.makefile("rb")
        head = b""
        while not head.endswith(b"\r\n\r\n"):
            head += f.readline()
        accept = base64.b64encode(hashlib.sha1((key + kWsGuid).encode()).digest())
        check(head.startswith(b"HTTP/1.1 101") and b"Sec-WebSocket-Accept: " + accept in head, "handshake: %r" % head)
        ws_send(s, 0x1, b"hello")
        check(ws_recv(f) == (1, 0x1, b"hello"), "text echo")
        for n in (200, 70000):
            data = os.urandom(n)
            ws_send(s, 0x2, data)
            check(ws_recv(f) == (1, 0x2, data), "binary echo of %d bytes" % n)
        ws_send(s, 0x9, b"p")
        check(ws_recv(f) == (1, 0xA, b"p"), "pong")
        ws_send(s, 0x8, struct.pack("!H", 1000))
        check(ws_recv(f) == (1, 0x8, struct.pack("!H", 1000)), "close echo")
        check(f.read() == b"", "EOF after close")


def test_app_slow(app):
    start = time.monotonic()
    check(get(app.port, "/slow?ms=300") == (200, b"ok"), "slow answer")
    check(time.monotonic() - start >= 0.3, "slow was fast")


def test_app_reset(app):
    with socket.create_connection(("127.0.0.1", app.port), timeout=10) as s:
        s.sendall(b"GET /reset HTTP/1.1\r\nHost: x\r\n\r\n")
        try:
            data = s.recv(65536)
        except ConnectionResetError:
            data = b""
        check(data == b"", "reset answered: %r" % data)
    check(get(app.port, "/healthz") == (200, b"ok"), "app alive after reset")


def test_app_files(app):
    check(request(app.port, "PUT", "/file/a.txt", body=b"abc")[0] == 201, "PUT")
    check(get(app.port, "/file/a.txt") == (200, b"abc"), "GET back")
    check(read(os.path.join(app.cwd, "data", "a.txt")) == b"abc", "stored under ./data")
    check(get(app.port, "/file/missing")[0] == 404, "missing → 404")
    check(request(app.port, "PUT", "/file/..", body=b"x")[0] == 400, "'..' refused")
    check(get(app.port, "/nope")[0] == 404, "unknown route → 404")


def test_app_env_whoami(app):
    status, body = get(app.port, "/env")
    env = json.loads(body)
    check(status == 200 and env.get("HELLO") == "world" and env.get("PORT") == "0", "env")
    who = json.loads(get(app.port, "/whoami")[1])
    check(who["uid"] == os.getuid() and who["gid"] == os.getgid(), "uid/gid")
    check(os.path.realpath(who["cwd"]) == os.path.realpath(app.cwd) and who["hostname"] == socket.gethostname(), "cwd/hostname")


def test_app_net_alloc_burn(app):
    net = json.loads(get(app.port, "/net?connect=127.0.0.1:%d" % app.port)[1])
    check("lo" in net["interfaces"] and net["connect_errno"] == 0, "net: interfaces and a connect to itself")
    check(get(app.port, "/net?connect=nonsense")[0] == 400, "net: a bad target → 400")
    check(json.loads(get(app.port, "/alloc?mb=8")[1]) == {"allocated_mb": 8}, "alloc")
    burn = json.loads(get(app.port, "/burn?ms=50")[1])
    check(burn["wall_s"] >= 0.05 and 0 < burn["cpu_s"] <= burn["wall_s"] + 0.01, "burn: wall and CPU time")


def test_app_exit():
    app = start_app()
    try:
        check(get(app.port, "/exit?code=7") == (200, b"bye"), "exit answer")
        check(app.wait(5) == 7, "exit code")
    finally:
        app.kill()


def main():
    try:
        build(out)
    except subprocess.CalledProcessError as e:
        print("FAIL build:", e)
        return 1
    sizes = {n: sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(os.path.join(out, n)) for f in fs)
             if os.path.isdir(os.path.join(out, n)) else os.path.getsize(os.path.join(out, n))
             for n in sorted(os.listdir(out))}
    print("built:", ", ".join("%s %.1f MB" % (n, s / 1e6) for n, s in sizes.items()))
    for fn in [test_build_is_deterministic, test_busybox_layout, test_busybox_oci_tarball, test_pyapp_layouts,
               test_pyapp_docker_save, test_importer_accepts_images, test_entrypoints_in_chroot, test_app_exit]:
        run_test(fn)
    try:
        app = start_app()
    except AssertionError as e:
        print("FAIL start_app:", e)
        return 1
    try:
        for fn in [test_app_echo_and_keepalive, test_app_raw_chunked_upload, test_app_upload_large, test_app_bytes,
                   test_app_sse_timing, test_app_websocket, test_app_slow, test_app_reset, test_app_files,
                   test_app_env_whoami, test_app_net_alloc_burn]:
            run_test(bound(fn, app))
        check(app.proc.poll() is None, "app died")
    finally:
        app.kill()
        app.wait()
    print("%d failed" % len(failures) if failures else "all passed")
    return 1 if failures else 0


def bound(fn, app):
    def run():
        fn(app)
    run.__name__ = fn.__name__
    return run


if __name__ == "__main__":
    try:
        sys.exit(main())
    finally:
        shutil.rmtree(work, ignore_errors=True)
