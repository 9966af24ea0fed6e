#!/usr/bin/env python3
"""Writes the seed corpus of the image_unpack fuzz target (tests/fuzz/corpus/image_unpack/): small
tars, layer kind (first byte 0) unless noted, each showing one rule of src/image/unpack.h.
Usage: tests/fuzz/make_image_unpack_seeds.py [DIR]"""
import gzip
import io
import os
import sys
import tarfile


def tar(entries, fmt=tarfile.GNU_FORMAT):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as t:
        for name, kind, extra in entries:
            ti = tarfile.TarInfo(name)
            ti.mtime = 1700000000
            data = b""
            if kind == "file":
                data = extra or b"hello\n"
                ti.size, ti.mode = len(data), 0o644
            elif kind == "setuid":
                data, ti.mode = b"#!/bin/sh\n", 0o4755
                ti.size = len(data)
            elif kind == "dir":
                ti.type, ti.mode = tarfile.DIRTYPE, 0o755
            elif kind == "symlink":
                ti.type, ti.linkname = tarfile.SYMTYPE, extra
            elif kind == "hardlink":
                ti.type, ti.linkname = tarfile.LNKTYPE, extra
            elif kind == "chr":
                ti.type, ti.devmajor, ti.devminor = tarfile.CHRTYPE, 1, 3
            elif kind == "fifo":
                ti.type = tarfile.FIFOTYPE
            t.addfile(ti, io.BytesIO(data) if data else None)
    data = buf.getvalue().rstrip(b"\0")
    blocks = -(-len(data) // 512) * 512
    return data.ljust(blocks, b"\0") + bytes(1024)  # the end-of-archive blocks, not the 10 KiB record


SEEDS = {
    "plain": tar([("etc", "dir", None), ("etc/hostname", "file", None), ("bin", "symlink", "usr/bin"),
                  ("usr/bin/", "dir", None), ("usr/bin/sh", "file", b"\x7fELF"), ("sh2", "hardlink", "usr/bin/sh")]),
    "whiteouts": tar([("a/.wh..wh..opq", "file", b""), ("a/keep", "file", None), ("b/.wh.gone", "file", b"")]),
    "dotdot": tar([("../escape", "file", None)]),
    "absolute": tar([("/abs", "file", None)]),
    "symlink_climb": tar([("up", "symlink", "../../etc"), ("ok", "symlink", "/etc/passwd")]),
    "through_symlink": tar([("link", "symlink", "/tmp"), ("link/x", "file", None)]),
    "hardlink_out": tar([("h", "hardlink", "../../etc/passwd"), ("h2", "hardlink", "missing")]),
    "devices": tar([("null", "chr", None), ("pipe", "fifo", None), ("su", "setuid", None)]),
    "long_names": tar([("d" * 120 + "/" + "f" * 150, "file", None), ("l", "symlink", "x" * 300)], tarfile.PAX_FORMAT),
}


def main():
    out = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                                             "corpus", "image_unpack")
    os.makedirs(out, exist_ok=True)
    for name, data in SEEDS.items():
        with open(os.path.join(out, name), "wb") as f:
            f.write(b"\0" + data)
    with open(os.path.join(out, "plain.gz"), "wb") as f:
        f.write(b"\0" + gzip.compress(SEEDS["plain"], mtime=0))
    with open(os.path.join(out, "bundle"), "wb") as f:
        f.write(b"\1" + SEEDS["plain"])


if __name__ == "__main__":
    main()
