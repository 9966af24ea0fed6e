#!/usr/bin/python3
"""Times a bare os.fork() of a warm Python laid out as the pool template lays itself out; not the clone's isolation.

Usage: /usr/bin/python3 bench/sandbox/template_fork.py BUILD_DIR {plain|huge|shared} [--n 60]
  plain:  imports numpy, pandas, matplotlib.pyplot, draws a figure, gc.freeze() (template.py
          with --memory plain);
  huge:   the same with sp_tpl_arena_region before the imports and sp_tpl_collapse_thp after
          (--memory huge);
  shared: the same with sp_tpl_share_memory after (--memory shared, the default).
Prints one line: mode, mappings, anonymous MiB, MiB in huge pages, fork wall and CPU median/p90 (ms).
Run the modes alternately, under flock /tmp/sandpool-bench.lock, to compare them.
"""
import ctypes
import gc
import io
import os
import sys
import time


def main():
    build, mode = sys.argv[1], sys.argv[2]
    n = int(sys.argv[sys.argv.index("--n") + 1]) if "--n" in sys.argv else 60
    lib = ctypes.PyDLL(os.path.join(build, "src", "sandbox", "libsandpool_clone.so"))
    if mode == "huge" and lib.sp_tpl_arena_region(ctypes.c_uint64(256 << 20)) != 0:
        sys.exit("arena region failed")
    os.environ["MPLBACKEND"] = "Agg"
    import numpy  # noqa: F401
    import pandas  # noqa: F401
    import matplotlib.pyplot as plt
    fig = plt.figure()
    plt.plot([1, 2, 3])
    fig.savefig(io.BytesIO(), format="png")
    plt.close("all")
    gc.collect()
    gc.freeze()
    if mode == "huge":
        lib.sp_tpl_collapse_thp.restype = ctypes.c_int64
        fails, first = ctypes.c_int32(0), ctypes.c_int32(0)
        lib.sp_tpl_collapse_thp(ctypes.byref(fails), ctypes.byref(first))
    if mode == "shared":
        lib.sp_tpl_share_memory.restype = ctypes.c_int64
        ranges = ctypes.c_int32(0)
        if lib.sp_tpl_share_memory(ctypes.byref(ranges)) < 0:
            sys.exit("sp_tpl_share_memory failed")
    with open("/proc/self/maps") as f:
        vmas = sum(1 for _ in f)
    roll = {}
    with open("/proc/self/smaps_rollup") as f:
        for line in f:
            parts = line.split()
            if len(parts) >= 2 and parts[1].isdigit():
                roll[parts[0].rstrip(":")] = int(parts[1]) >> 10
    wall, cpu = [], []
    for _ in range(n):
        c, t = time.thread_time(), time.perf_counter()
        pid = os.fork()
        if pid == 0:
            os._exit(0)
        wall.append((time.perf_counter() - t) * 1e3)
        cpu.append((time.thread_time() - c) * 1e3)
        os.waitpid(pid, 0)
    wall.sort()
    cpu.sort()
    print(f"{mode:5} mappings {vmas} anon {roll.get('Anonymous', 0)} MiB huge {roll.get('AnonHugePages', 0)} MiB "
          f"fork wall {wall[n // 2]:.2f}/{wall[n * 9 // 10]:.2f} cpu {cpu[n // 2]:.2f}/{cpu[n * 9 // 10]:.2f} ms")


if __name__ == "__main__":
    main()
