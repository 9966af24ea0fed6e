#!/usr/bin/python3
"""Micro-VM benchmarks (issue 6): VM create -> first guest instruction, syscall and fault round
trips per trap backend, and program start in the VM against native. Prints a markdown report.
Usage: bench/vmm/bench.py BUILD_DIR [RUNS]   (see bench/vmm/run.sh)"""
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

BUILD = sys.argv[1]
RUNS = int(sys.argv[2]) if len(sys.argv) > 2 else 20
SANDPOOL = os.path.join(BUILD, "src", "sandpool")
HERE = os.path.dirname(os.path.abspath(__file__))
TMP = tempfile.mkdtemp(prefix="vmm-bench-")


def build_guests():
    flags = ["-O2", "-ffreestanding", "-fno-stack-protector", "-fno-pic", "-nostdlib", "-static", "-no-pie",
             "-fcf-protection=none"]
    exit_now = os.path.join(TMP, "exit_now")
    loop = os.path.join(TMP, "syscall_loop")
    subprocess.run(["gcc", *flags, "-o", exit_now, os.path.join(HERE, "guests", "exit_now.S")], check=True)
    subprocess.run(["gcc", *flags, "-o", loop, os.path.join(HERE, "guests", "syscall_loop.c")], check=True)
    return exit_now, loop


def stats_of(args, opts=()):
    p = subprocess.run([SANDPOOL, "vm-run", "--stats", *opts, "--", *args], capture_output=True)
    err = p.stderr.decode()
    m = re.search(r"create ([\d.]+) ms, load ([\d.]+) ms, first exit ([\d.]+) ms, run ([\d.]+) ms, syscalls (\d+)", err)
    if p.returncode != 0 or not m:
        raise SystemExit(f"vm-run failed: {args} {opts}: {err}")
    return [float(x) for x in m.groups()]


def wall(cmd, runs=RUNS):
    ts = []
    for _ in range(runs):
        t = time.perf_counter()
        p = subprocess.run(cmd, capture_output=True)
        ts.append((time.perf_counter() - t) * 1000)
        if p.returncode != 0:
            raise SystemExit(f"failed: {cmd}: {p.stderr.decode()[-500:]}")
    return ts


def fmt(ts):
    return f"{statistics.median(ts):.2f} ({min(ts):.2f}–{max(ts):.2f})"


def main():
    exit_now, loop = build_guests()
    print(f"Runs per row: {RUNS} unless noted; figures are median (min–max).\n")
    print(f"Machine load at start: {open('/proc/loadavg').read().strip()}\n")

    print("## VM create → first guest instruction\n")
    print("Guest whose first instruction is `exit_group` (`bench/vmm/guests/exit_now.S`); `vm-run --stats` "
          "timings (create = KVM VM + memfd + system area + vCPU; first exit = create start → the exit of the first "
          "instruction).\n")
    print("| backend | create ms | load+vCPU setup ms | create → first exit ms |\n|---|---|---|---|")
    for be in ("triple-fault", "cpl0-stub"):
        rows = [stats_of([exit_now], ("--backend", be, "--memory", "256")) for _ in range(RUNS)]
        print(f"| {be} | {fmt([r[0] for r in rows])} | {fmt([r[1] for r in rows])} | {fmt([r[2] for r in rows])} |")

    print("\n## Syscall and fault round trips (guest → VMM → guest)\n")
    n = 20000
    print(f"`syscall_loop {n}` (getppid) and `syscall_loop {n // 4} fault` (ud2 → SIGILL handler → rt_sigreturn: "
          "two exits plus XSAVE get/set), run time divided by count.\n")
    print("| backend | µs per syscall | µs per fault+handler+sigreturn |\n|---|---|---|")
    for be in ("triple-fault", "cpl0-stub"):
        sc = [stats_of([loop, str(n)], ("--backend", be, "--memory", "256"))[3] * 1000 / n for _ in range(7)]
        ft = [stats_of([loop, str(n // 4), "fault"], ("--backend", be, "--memory", "256"))[3] * 1000 / (n // 4)
              for _ in range(7)]
        print(f"| {be} | {fmt(sc)} | {fmt(ft)} |")

    print("\n## Program start, wall clock of the whole command (fork+exec included on both sides)\n")
    base = wall([SANDPOOL, "version"])
    print(f"Baseline: `sandpool version` (binary start and exit, no VM) takes {fmt(base)} ms; it is part of every "
          "vm-run figure below. The `--stats` columns are measured inside the VMM: create → exit of the guest.\n")
    print("| program | native ms | vm-run ms | ratio | inside VMM ms | guest syscalls |\n|---|---|---|---|---|---|")
    progs = [
        ("busybox echo hello", ["/bin/busybox", "echo", "hello"], RUNS),
        ("python3 -S -c 'print(1)'", ["/usr/bin/python3", "-S", "-c", "print(1)"], RUNS),
        ("python3 -c 'print(1)'", ["/usr/bin/python3", "-c", "print(1)"], RUNS),
        ("python3 -c 'import numpy, pandas, matplotlib'",
         ["/usr/bin/python3", "-c", "import numpy, pandas, matplotlib"], max(3, RUNS // 4)),
    ]
    for name, args, runs in progs:
        nat = wall(args, runs)
        for opts, label in (((), ""), (("--no-vdso",), ", no vDSO")):
            vmt = wall([SANDPOOL, "vm-run", *opts, "--", *args], runs)
            st = [stats_of(args, opts) for _ in range(max(3, runs // 3))]
            inside = [r[0] + r[1] + r[3] for r in st]
            print(f"| {name}{label} | {fmt(nat)} | {fmt(vmt)} | {statistics.median(vmt) / statistics.median(nat):.1f}× "
                  f"| {fmt(inside)} | {st[0][4]:.0f} |")
    print("\n## Snapshot and copy-on-write clones (`vm-run --clones N`)\n")
    print("The template runs until its first `read(0)`, is frozen (memfd + vCPU state), then each clone maps the "
          "memory MAP_PRIVATE, restores SREGS/XSAVE and completes the read with its own stdin. `clone` = clone "
          "start → ready to enter the guest; `run` = the request to exit; `private` = the clone's anonymous "
          "(copy-on-write) memory at exit, from smaps.\n")
    print("| template | request | memory MiB | clones | clone ms | run ms | private KiB |\n|---|---|---|---|---|---|---|")
    fast_exit = "print(6*7); sys.stdout.flush(); os._exit(0)"
    cases = [
        ("python3 -S", ["/usr/bin/python3", "-S", "-c", "import sys, os; exec(sys.stdin.read())"], fast_exit, "256"),
        ("python3 -S", ["/usr/bin/python3", "-S", "-c", "import sys, os; exec(sys.stdin.read())"], fast_exit, "1024"),
        ("python3 (site)", ["/usr/bin/python3", "-c", "import sys, os; exec(sys.stdin.read())"], "print(6*7)", "1024"),
        ("python3 + numpy, pandas, matplotlib",
         ["/usr/bin/python3", "-c", "import sys, os, numpy, pandas, matplotlib; exec(sys.stdin.read())"], fast_exit, "1024"),
    ]
    for name, args, req, mem in cases:
        n = 10
        p = subprocess.run([SANDPOOL, "vm-run", "--memory", mem, "--clones", str(n), "--", *args], input=req.encode(),
                           capture_output=True)
        rows = re.findall(r"clone \d+: clone ([\d.]+) ms, run ([\d.]+) ms, total [\d.]+ ms, syscalls \d+, "
                          r"private (\d+) KiB", p.stderr.decode())
        if p.returncode != 0 or len(rows) != n:
            raise SystemExit(f"clones failed: {name}: {p.stderr.decode()[-800:]}")
        label = "exit via os._exit" if "_exit" in req else "print, normal interpreter exit"
        print(f"| {name} | {label} | {mem} | {n} | {fmt([float(r[0]) for r in rows])} | "
              f"{fmt([float(r[1]) for r in rows])} | {fmt([float(r[2]) for r in rows])} |")
    print(f"\nMachine load at end: {open('/proc/loadavg').read().strip()}")
    shutil.rmtree(TMP, ignore_errors=True)


main()
