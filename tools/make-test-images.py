#!/usr/bin/python3
"""Builds sandpool's custom-container test images from Debian files: no Docker, no network.

Usage: tools/make-test-images.py OUTDIR

Writes into OUTDIR (see README.md, "Other scripts"):
  busybox-httpd/         OCI image layout: busybox httpd on :8080, two layers with whiteouts
  busybox-httpd.oci.tar  the same layout as one tarball
  pyapp/                 OCI image layout: the host's Python 3.11 running test-images/app.py
  pyapp-docker.tar       the same image as a `docker save` tarball
  pyapp-zstd/            pyapp with zstd-compressed layers (only when the zstd CLI exists)
Output is deterministic (fixed mtimes, sorted entries, uid/gid 0): the same inputs give
the same digests. Standard library only.
"""
import gzip
import hashlib
import io
import json
import os
import platform
import shutil
import struct
import subprocess
import sys
import tarfile

kMtime = 946684800  # 2000-01-01T00:00:00Z, every entry and the image configs
kCreated = "2000-01-01T00:00:00Z"
kHere = os.path.dirname(os.path.abspath(__file__))
kAppDir = os.path.join(kHere, "test-images")
kPython = "/usr/bin/python3.11"
kStdlib = "/usr/lib/python3.11"
kStdlibSkipTop = {"test", "idlelib", "tkinter", "ensurepip", "lib2to3", "pydoc_data",
                  "config-3.11-x86_64-linux-gnu", "config-3.11-aarch64-linux-gnu", "dist-packages"}
# Extension modules in lib-dynload that app.py imports (the rest is built into Debian's
# python3.11); their shared libraries go into the image. _hashlib is left out on purpose:
# without libcrypto hashlib falls back to its built-in sha1/sha256.
kDynloadUsed = ["_json"]
kBusyboxApplets = ["sh", "httpd", "cat", "env", "sleep", "ls", "echo", "head", "wc", "printf",
                   "id", "hostname", "mkdir", "rm", "test", "true", "false"]
kOciManifest = "application/vnd.oci.image.manifest.v1+json"
kOciConfig = "application/vnd.oci.image.config.v1+json"
kOciIndex = "application/vnd.oci.image.index.v1+json"
kLayerTypes = {"gzip": "application/vnd.oci.image.layer.v1.tar+gzip",
               "zstd": "application/vnd.oci.image.layer.v1.tar+zstd"}


def fail(msg):
    sys.exit("make-test-images: " + msg)


def elf_is_static(path):
    """True when the ELF64 file has no PT_INTERP program header (needs no dynamic loader)."""
    with open(path, "rb") as f:
        head = f.read(64)
        if head[:4] != b"\x7fELF" or head[4] != 2:
            return False
        phoff, = struct.unpack_from("<Q", head, 32)
        phentsize, phnum = struct.unpack_from("<HH", head, 54)
        f.seek(phoff)
        table = f.read(phentsize * phnum)
    return all(struct.unpack_from("<I", table, i * phentsize)[0] != 3 for i in range(phnum))


def check_inputs():
    """Fails naming the Debian package for the first missing input."""
    needs = [("/bin/busybox", "busybox-static"), (kPython, "python3.11-minimal"),
             (kStdlib + "/http/server.py", "libpython3.11-stdlib"), ("/usr/bin/ldd", "libc-bin")]
    for path, package in needs:
        if not os.path.exists(path):
            fail("%s is missing: install the Debian package %s (tools/install-deps.sh test)" % (path, package))
    if not elf_is_static("/bin/busybox"):
        fail("/bin/busybox is not statically linked: install the Debian package busybox-static")


class Layer:
    """A layer's entries by path (no leading slash); written as a sorted, deterministic tar."""

    def __init__(self):
        self.entries = {}  # path → (kind, content, mode); kind f (bytes), F (host file), d, l

    def add_parents(self, path):
        parent = os.path.dirname(path)
        if parent and parent not in self.entries:
            self.add_parents(parent)
            self.entries[parent] = ("d", None, 0o755)

    def add(self, path, kind, content=None, mode=0o644):
        path = path.strip("/")
        self.add_parents(path)
        self.entries[path] = (kind, content, mode)

    def add_host_path(self, host_path):
        """Copies a host file, following symlinks and keeping them as symlinks; directory
        parts are resolved (merged /usr) so no entry goes through a symlink."""
        path = os.path.join(os.path.realpath(os.path.dirname(host_path)), os.path.basename(host_path))
        if path.strip("/") in self.entries:
            return
        if os.path.islink(path):
            target = os.readlink(path)
            self.add(path, "l", target)
            self.add_host_path(os.path.join(os.path.dirname(path), target))
        else:
            self.add(path, "F", path, os.stat(path).st_mode & 0o755)

    def add_host_tree(self, host_dir, skip_top=()):
        for root, dirs, files in os.walk(host_dir):
            top = root == host_dir
            dirs[:] = [d for d in dirs if d != "__pycache__" and not (top and d in skip_top)]
            self.add(root, "d", None, 0o755)
            for name in dirs + files:
                if name in dirs and not os.path.islink(os.path.join(root, name)):
                    continue
                self.add_host_path(os.path.join(root, name))

    def tar(self):
        out = io.BytesIO()
        with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
            for path in sorted(self.entries):
                kind, content, mode = self.entries[path]
                info = tarfile.TarInfo(path)
                info.mode, info.mtime, info.uid, info.gid, info.uname, info.gname = mode, kMtime, 0, 0, "", ""
                data = None
                if kind == "d":
                    info.type = tarfile.DIRTYPE
                elif kind == "l":
                    info.type, info.linkname = tarfile.SYMTYPE, content
                else:
                    data = content if kind == "f" else open(content, "rb").read()
                    info.size = len(data)
                tar.addfile(info, io.BytesIO(data) if data is not None else None)
        return out.getvalue()


def busybox_layers():
    base = Layer()
    base.add("bin/busybox", "F", os.path.realpath("/bin/busybox"), 0o755)
    for applet in kBusyboxApplets:
        base.add("bin/" + applet, "l", "busybox")
    base.add("tmp", "d", None, 0o1777)
    base.add("www/index.html", "F", os.path.join(kAppDir, "index.html"))
    base.add("www/cgi-bin/echo", "F", os.path.join(kAppDir, "echo.cgi"), 0o755)
    base.add("www/old.html", "f", b"removed by a whiteout in layer 2\n")
    base.add("www/stale/gone.txt", "f", b"hidden by an opaque directory in layer 2\n")
    top = Layer()
    top.add("www/.wh.old.html", "f", b"")
    top.add("www/stale/.wh..wh..opq", "f", b"")
    top.add("www/stale/new.txt", "f", b"from layer 2\n")
    return [base.tar(), top.tar()]


def ldd_paths(binary):
    """The absolute paths `ldd` names for `binary`, the dynamic loader included."""
    out = subprocess.run(["ldd", binary], check=True, capture_output=True, text=True).stdout
    paths = []
    for line in out.splitlines():
        words = line.split()
        if "=>" in words and words.index("=>") + 1 < len(words) and words[words.index("=>") + 1].startswith("/"):
            paths.append(words[words.index("=>") + 1])
        elif words and words[0].startswith("/"):
            paths.append(words[0])
    return paths


def pyapp_layers():
    runtime = Layer()
    for top in ("bin", "lib", "lib64"):  # merged /usr: keep the same links
        if os.path.islink("/" + top):
            runtime.add(top, "l", os.readlink("/" + top))
    runtime.add_host_path("/usr/bin/python3")
    runtime.add_host_tree(kStdlib, kStdlibSkipTop)
    binaries = [kPython] + [os.path.join(kStdlib, "lib-dynload", f)
                            for f in sorted(os.listdir(kStdlib + "/lib-dynload"))
                            if f.split(".")[0] in kDynloadUsed]
    for binary in binaries:
        for path in ldd_paths(binary):
            runtime.add_host_path(path)
    runtime.add("tmp", "d", None, 0o1777)
    app = Layer()
    app.add("app/app.py", "F", os.path.join(kAppDir, "app.py"))
    return [runtime.tar(), app.tar()]


def image_config(diff_ids, config, steps):
    arch = {"x86_64": "amd64", "aarch64": "arm64"}.get(platform.machine(), platform.machine())
    return {"architecture": arch, "os": "linux", "created": kCreated, "config": config,
            "rootfs": {"type": "layers", "diff_ids": diff_ids},
            "history": [{"created": kCreated, "created_by": "tools/make-test-images.py: " + s} for s in steps]}


def to_json(obj):
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()


def sha256(data):
    return hashlib.sha256(data).hexdigest()


def compress(data, how):
    if how == "gzip":
        return gzip.compress(data, compresslevel=6, mtime=0)
    return subprocess.run(["zstd", "-q", "-c", "-3", "-T1"], input=data, check=True,
                          capture_output=True).stdout


def write_blob(layout, data, media_type):
    hex_ = sha256(data)
    with open(os.path.join(layout, "blobs", "sha256", hex_), "wb") as f:
        f.write(data)
    return {"mediaType": media_type, "digest": "sha256:" + hex_, "size": len(data)}


def write_layout(layout, name, tars, config, steps, how="gzip"):
    """An OCI image layout (image-spec image-layout.md) holding one image."""
    shutil.rmtree(layout, ignore_errors=True)
    os.makedirs(os.path.join(layout, "blobs", "sha256"))
    layers = [write_blob(layout, compress(t, how), kLayerTypes[how]) for t in tars]
    cfg = image_config(["sha256:" + sha256(t) for t in tars], config, steps)
    manifest = {"schemaVersion": 2, "mediaType": kOciManifest,
                "config": write_blob(layout, to_json(cfg), kOciConfig), "layers": layers}
    desc = write_blob(layout, to_json(manifest), kOciManifest)
    desc["platform"] = {"architecture": cfg["architecture"], "os": "linux"}
    desc["annotations"] = {"org.opencontainers.image.ref.name": name}
    index = {"schemaVersion": 2, "mediaType": kOciIndex, "manifests": [desc]}
    with open(os.path.join(layout, "index.json"), "wb") as f:
        f.write(to_json(index))
    with open(os.path.join(layout, "oci-layout"), "wb") as f:
        f.write(to_json({"imageLayoutVersion": "1.0.0"}))


def write_tar(path, files):
    """A deterministic tarball of {name: bytes}, with the directories the names need."""
    layer = Layer()
    for name, data in files.items():
        layer.add(name, "f", data)
    with open(path, "wb") as f:
        f.write(layer.tar())


def tar_of_dir(path, src):
    files = {}
    for root, _, names in os.walk(src):
        for n in names:
            full = os.path.join(root, n)
            with open(full, "rb") as f:
                files[os.path.relpath(full, src)] = f.read()
    write_tar(path, files)


def write_docker_save(path, repo_tag, tars, config, steps):
    """A `docker save` tarball: manifest.json, <config hex>.json, <diff_id hex>/layer.tar."""
    cfg = to_json(image_config(["sha256:" + sha256(t) for t in tars], config, steps))
    layer_paths = [sha256(t) + "/layer.tar" for t in tars]
    files = {sha256(cfg) + ".json": cfg}
    files.update(zip(layer_paths, tars))
    files["manifest.json"] = to_json([{"Config": sha256(cfg) + ".json", "RepoTags": [repo_tag],
                                       "Layers": layer_paths}])
    write_tar(path, files)


def main():
    if len(sys.argv) != 2:
        sys.exit("usage: make-test-images.py OUTDIR")
    out = sys.argv[1]
    check_inputs()
    os.makedirs(out, exist_ok=True)

    busybox_config = {"Entrypoint": ["/bin/busybox", "httpd", "-f", "-v", "-p", "8080", "-h", "/www"],
                      "Env": ["PATH=/bin"], "WorkingDir": "/www", "ExposedPorts": {"8080/tcp": {}}}
    busybox_steps = ["busybox-static, applet links, /www", "whiteout www/old.html, opaque www/stale"]
    write_layout(os.path.join(out, "busybox-httpd"), "busybox-httpd", busybox_layers(),
                 busybox_config, busybox_steps)
    tar_of_dir(os.path.join(out, "busybox-httpd.oci.tar"), os.path.join(out, "busybox-httpd"))

    py_config = {"Entrypoint": ["/usr/bin/python3", "/app/app.py"],
                 "Env": ["PORT=8080", "PYTHONDONTWRITEBYTECODE=1", "PATH=/usr/bin:/bin"],
                 "WorkingDir": "/app", "ExposedPorts": {"8080/tcp": {}}}
    py_steps = ["python3.11, its stdlib and shared libraries", "/app/app.py"]
    py_tars = pyapp_layers()
    write_layout(os.path.join(out, "pyapp"), "pyapp", py_tars, py_config, py_steps)
    write_docker_save(os.path.join(out, "pyapp-docker.tar"), "sandpool-test/pyapp:latest",
                      py_tars, py_config, py_steps)
    if shutil.which("zstd"):
        write_layout(os.path.join(out, "pyapp-zstd"), "pyapp-zstd", py_tars, py_config, py_steps, "zstd")
    else:
        print("make-test-images: zstd CLI missing (Debian package zstd): pyapp-zstd not built",
              file=sys.stderr)


if __name__ == "__main__":
    main()
