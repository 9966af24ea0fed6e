"""sandpool pool template: a warm Python (libraries imported) that forks isolated clones on request; not the agent.

Started by the C++ PoolSpawner (pool_spawner.cc) as
  /usr/bin/python3 -I template.py --ctrl-fd 3 --lib libsandpool_clone.so --parent PID
      --data-bytes N --tmp-bytes N [--agent-path DIR] [--preload numpy,pandas,matplotlib.pyplot]
      [--memory shared|huge|plain] [--host-warms-up]
Protocol on the SOCK_SEQPACKET control socket (little-endian):
  spawner -> template, first: the seccomp BPF program (raw bytes).
  template -> spawner: b"READY" once imports and warm-up are done.
  spawner -> template: SPAWN = <QIII> generation, host uid, host gid, flags, with SCM_RIGHTS
      [agent socket, report pipe write end, cgroup.procs fds..., (netns fd if flags & 1)].
  template -> spawner: <QiiQ> generation, pid (or 0), errno, ns spent in the fork, with SCM_RIGHTS
      [pidfd] on success.
The template runs as host root but never runs user code; the request loop (sp_tpl_serve)
and all isolation happen in C (libsandpool_clone.so); the forked child, once isolated,
becomes the agent's supervisor (src/agent/supervisor.cc, also in libsandpool_clone.so), and its
workers return to Python and call sandpool_agent.serve_worker (or, when the agent is not
importable, the clone runs an echo loop).
"""
import argparse
import ctypes
import errno
import gc
import os
import signal
import socket
import sys


def echo_loop(fd):
    """Stand-in agent for tests: echoes every chunk back; b'pid' answers our pid and uid."""
    s = socket.socket(fileno=fd)
    while True:
        data = s.recv(65536)
        if not data:
            os._exit(0)
        if data == b"pid":
            data = f"{os.getpid()} {os.getuid()} {socket.gethostname()} {os.getcwd()}".encode()
        elif data.startswith(b"exec:"):
            ns = {}
            try:
                exec(data[5:].decode(), ns)
                data = repr(ns.get("result")).encode()
            except BaseException as e:  # noqa: BLE001 - report anything to the test
                data = f"error: {e!r}".encode()
        s.sendall(data)


def collapse_huge_pages(lib):
    """Maps the template's anonymous memory with huge pages (fewer page-table entries per fork); says once when it cannot."""
    lib.sp_tpl_collapse_thp.restype = ctypes.c_int64
    failures, first = ctypes.c_int32(0), ctypes.c_int32(0)
    got = lib.sp_tpl_collapse_thp(ctypes.byref(failures), ctypes.byref(first))
    if got < 0:
        why = "transparent huge pages are off" if -got == errno.EOPNOTSUPP else os.strerror(-got)
        sys.stderr.write(f"sandpool template: no huge pages ({why}); forks copy 4 KiB page-table entries\n")
    elif failures.value and got == 0:
        sys.stderr.write(f"sandpool template: no huge pages (MADV_COLLAPSE: {os.strerror(first.value)}); "
                         "forks copy 4 KiB page-table entries\n")
    elif failures.value:
        sys.stderr.write(f"sandpool template: {got >> 20} MiB in huge pages, {failures.value} ranges not "
                         f"collapsed ({os.strerror(first.value)})\n")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--ctrl-fd", type=int, required=True)
    ap.add_argument("--lib", required=True)
    ap.add_argument("--parent", type=int, required=True)
    ap.add_argument("--data-bytes", type=int, required=True)
    ap.add_argument("--tmp-bytes", type=int, required=True)
    ap.add_argument("--agent-path", default="")
    ap.add_argument("--preload", default="numpy,pandas,matplotlib.pyplot")
    # template_memory.h, TemplateMemory: shared (memfd, the default), huge (THP) or plain.
    ap.add_argument("--memory", choices=("shared", "huge", "plain"), default="shared")
    ap.add_argument("--host-warms-up", action="store_true")  # PoolTemplateConfig::host_warms_up
    a = ap.parse_args()

    lib = ctypes.PyDLL(a.lib)  # PyDLL: the GIL stays held, nothing else runs during a call
    huge_pages = a.memory == "huge"
    if a.memory == "shared":
        lib.sp_tpl_memory_open()  # before sp_tpl_init: /proc is not in the template's root
    if huge_pages:
        # Before sp_tpl_init (it reads the host's THP settings while /sys and /proc are visible) and
        # before the imports: their object arenas then sit in one mapping that can be collapsed
        # to huge pages below (template_memory.cc says why a fork is cheaper then).
        rc = lib.sp_tpl_arena_region(ctypes.c_uint64(256 << 20))
        if rc != 0:
            sys.stderr.write(f"sandpool template: arena region: {os.strerror(-rc)} (arenas mapped one by one)\n")
    agent = os.path.abspath(a.agent_path).encode() if a.agent_path and os.path.isdir(a.agent_path) else None
    # Our threads are counted after the imports, when /proc is no longer in our root: keep the
    # directory open from here (a procfs directory lists the live threads).
    try:
        task_dir = os.open("/proc/self/task", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        task_dir = -1
    # From here on we live in a sandbox-shaped root: only /usr, /lib*, /etc subset, /dev, agent.
    rc = lib.sp_tpl_init(a.parent, ctypes.c_uint64(a.data_bytes), ctypes.c_uint64(a.tmp_bytes), agent)
    if rc != 0:
        sys.stderr.write(f"sandpool template: init failed: {os.strerror(-rc)}\n")
        return 1
    ctrl = socket.socket(fileno=a.ctrl_fd)
    bpf = ctrl.recv(1 << 20)
    rc = lib.sp_tpl_set_seccomp(bpf, len(bpf))
    if rc != 0:
        return 1

    # Warm the interpreter the way sessions will use it.
    for k, v in (("MPLBACKEND", "Agg"), ("NUMEXPR_NUM_THREADS", "1"), ("OPENBLAS_NUM_THREADS", "1"),
                 ("OMP_NUM_THREADS", "1"), ("MKL_NUM_THREADS", "1"), ("HOME", "/mnt/data"), ("TMPDIR", "/tmp"),
                 ("MPLCONFIGDIR", "/tmp/.matplotlib"), ("XDG_CACHE_HOME", "/tmp/.cache"),
                 ("PATH", "/usr/local/bin:/usr/bin:/bin")):
        os.environ[k] = v
    np = None
    for name in [m for m in a.preload.split(",") if m]:
        try:
            mod = __import__(name)
            if name == "numpy":
                np = mod
        except Exception as e:  # noqa: BLE001 - a missing library must not stop the pool
            sys.stderr.write(f"sandpool template: preload {name}: {e}\n")
    if "matplotlib.pyplot" in sys.modules:
        import io
        plt = sys.modules["matplotlib.pyplot"]
        fig = plt.figure()
        plt.plot([1, 2, 3])
        fig.savefig(io.BytesIO(), format="png")
        plt.close("all")
    fm = sys.modules.get("matplotlib.font_manager")
    if fm is not None and hasattr(getattr(fm, "_get_font", None), "cache_clear"):
        # matplotlib empties this cache in every child after a fork (FT2Font objects must not
        # be shared), so clones never use what the warm-up put there; emptying it here spares
        # each clone freeing them: ~90 copy-on-write page faults (~0.35 MiB, ~0.3 ms) per clone.
        fm._get_font.cache_clear()
    serve = None
    if agent:
        sys.path.insert(0, "/opt/sandpool/agent")  # where sp_tpl_init bound agent_path
    try:
        import sandpool_agent
        serve = sandpool_agent.serve_worker
    except ImportError:
        serve = None
    # The agent's Worker, made and warmed up here: its allocations and first writes stay shared
    # with every clone, whose workers adopt it (sandpool_agent.prepare_worker).
    prepared = sandpool_agent.prepare_worker() if serve is not None else None
    gc.collect()
    gc.freeze()  # everything so far stays in the shared, never-collected generation
    # One thread (the usual case: the thread pools above are at 1): forks skip the interpreter's
    # at-fork callbacks (template_clone.cc, sp_tpl_set_fork_hooks, says why that is safe then).
    single_thread = False
    if task_dir >= 0:
        try:
            single_thread = len(os.listdir(task_dir)) == 1
        except OSError:
            pass
        os.close(task_dir)
    lib.sp_tpl_set_fork_hooks(0 if single_thread else 1)
    # Without those hooks a signal whose Python handler has not run yet at a fork would be handled
    # again in the clone (os.fork forgets it there): the only Python handler here is SIGINT's
    # (KeyboardInterrupt), so it is ignored from now on. The template ends by its control
    # socket's EOF or its parent's death, never by SIGINT; the agent sets its own handlers.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if huge_pages:
        collapse_huge_pages(lib)
    elif a.memory == "shared" and single_thread:
        # Moves the template's anonymous memory into a sealed memfd mapped copy-on-write, so that
        # forks copy no page-table entries for it. Last, once nothing else will be imported: later
        # allocations stay anonymous, and the copy needs the one thread (a write by another thread
        # during it would be lost). Done by sp_tpl_serve as it starts: no Python runs after it.
        lib.sp_tpl_share_memory_on_serve()
    elif a.memory == "shared":
        sys.stderr.write("sandpool template: more than one thread; memory not shared, forks copy its page tables\n")

    # The request loop runs in C (sp_tpl_serve): between forks the template must write as few
    # pages as possible, since each page written after a fork is copied once per clone.
    # SIGCHLD at its default (no Python handler, no wake-up fd): the C loop reaps clones itself.
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    ctrl.send(b"READY")
    agent_fd = ctypes.c_int32(-1)
    # With the agent, each clone becomes its supervisor in C at once (sp_tpl_serve); what
    # returns below is then the supervisor's first worker (or a later one).
    worker = sandpool_agent.SupervisedWorker() if serve is not None else None
    rc = lib.sp_tpl_serve(ctrl.fileno(), ctypes.byref(agent_fd),
                          sandpool_agent.DEFAULT_GRACE_MS if serve is not None else 0,
                          ctypes.byref(worker) if worker is not None else None)
    if rc <= 0:
        if rc < 0:
            sys.stderr.write(f"sandpool template: control socket: {os.strerror(-rc)}\n")
        return 0 if rc == 0 else 1
    # The clone (with the agent: its supervisor's worker), isolated. The C side closed every fd but the
    # agent socket; detach Python objects from them.
    ctrl.detach()
    if serve is None:
        # The echo stand-in runs code here: fresh random state for it. (The agent reseeds in each
        # of its workers, sandpool_agent.reseed(): its supervisor runs no user code.)
        import random
        random.seed()
        if np is not None:
            # As sandpool_agent.reseed(): the MT19937 state from the kernel, cheaper than np.random.seed().
            np.random.set_state(("MT19937", np.frombuffer(os.urandom(624 * 4), dtype=np.uint32), 624, 0, 0.0))
    code = 1
    try:
        # --host-warms-up: the pool sends each clone a warm-up execute before it counts as ready
        # (ProcessSource::send_warm_up), which warms the whole request path; the agent's own
        # hello-time cell would only add pages (≈ 120-180 KiB per sandbox, bench/results/sandbox-2026-11-29.md).
        code = serve(agent_fd.value, worker, first_warm_up=not a.host_warms_up, prepared=prepared) \
            if serve is not None else echo_loop(agent_fd.value)
    finally:
        os._exit(code or 0)


if __name__ == "__main__":
    sys.exit(main())
