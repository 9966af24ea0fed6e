#!/usr/bin/python3
"""Writes a minimal OCI image layout for the container tests: busybox-static, /bin/sh, an /etc
with a user `app` (1234:1234), /www (world-writable) with index.html, healthz and a CGI
`cgi-bin/sh?CMD` that runs a URL-encoded shell command inside the container.

usage: make_busybox_image.py OUTDIR CONFIG_JSON [SYMLINKS_JSON]
  CONFIG_JSON: the image config's "config" object; SYMLINKS_JSON: {"path": "target", ...} added
  as a second layer (hostile images: a symlinked /proc, an /etc/passwd pointing at the host's).
"""
import hashlib
import io
import json
import os
import sys
import tarfile

CGI = b"""#!/bin/sh
cmd=$(/bin/busybox httpd -d "$QUERY_STRING")
echo "Content-Type: text/plain"
echo
/bin/sh -c "$cmd" 2>&1
"""


def layer_tar():
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as t:
        def add(name, kind, data=b"", mode=0o644, link="", uid=0):
            ti = tarfile.TarInfo(name)
            ti.mode = mode
            ti.uid = ti.gid = uid
            ti.mtime = 0
            if kind == "d":
                ti.type = tarfile.DIRTYPE
            elif kind == "l":
                ti.type = tarfile.SYMTYPE
                ti.linkname = link
            else:
                ti.size = len(data)
            t.addfile(ti, io.BytesIO(data) if kind == "f" else None)
        for d, m in [("bin", 0o755), ("etc", 0o755), ("www", 0o1777), ("www/cgi-bin", 0o755), ("tmp", 0o1777),
                     ("home", 0o755), ("root", 0o700)]:
            add(d, "d", mode=m)
        add("home/app", "d", mode=0o755, uid=1234)
        with open("/bin/busybox", "rb") as f:
            add("bin/busybox", "f", f.read(), 0o755)
        add("bin/sh", "l", link="busybox")
        add("etc/passwd", "f", b"root:x:0:0:root:/root:/bin/sh\napp:x:1234:1234:app:/home/app:/bin/sh\n")
        add("etc/group", "f", b"root:x:0:\napp:x:1234:\nstaff:x:50:\n")
        add("www/index.html", "f", b"hello from busybox\n")
        add("www/healthz", "f", b"ok\n", 0o666)
        add("www/cgi-bin/sh", "f", CGI, 0o755)
    return buf.getvalue()


def symlink_layer(links):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as t:
        for name, target in sorted(links.items()):
            ti = tarfile.TarInfo(name)
            ti.type = tarfile.SYMTYPE
            ti.linkname = target
            ti.mtime = 0
            t.addfile(ti)
    return buf.getvalue()


def main():
    out, config = sys.argv[1], json.loads(sys.argv[2])
    links = json.loads(sys.argv[3]) if len(sys.argv) > 3 else {}
    blobs = os.path.join(out, "blobs", "sha256")
    os.makedirs(blobs, exist_ok=True)

    def blob(data):
        h = hashlib.sha256(data).hexdigest()
        with open(os.path.join(blobs, h), "wb") as f:
            f.write(data)
        return "sha256:" + h, len(data)

    layers = [blob(layer_tar())]
    if links:
        layers.append(blob(symlink_layer(links)))
    cfg = json.dumps({"architecture": "amd64", "os": "linux", "config": config,
                      "rootfs": {"type": "layers", "diff_ids": [d for d, _ in layers]}}).encode()
    cdigest, csize = blob(cfg)
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cdigest, "size": csize},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": d, "size": n} for d, n in layers],
    }).encode()
    mdigest, msize = blob(manifest)
    with open(os.path.join(out, "oci-layout"), "w") as f:
        json.dump({"imageLayoutVersion": "1.0.0"}, f)
    with open(os.path.join(out, "index.json"), "w") as f:
        json.dump({"schemaVersion": 2, "manifests": [
            {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": mdigest, "size": msize}]}, f)


if __name__ == "__main__":
    main()
