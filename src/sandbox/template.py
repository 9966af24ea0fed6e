"""sandpool pool template: a warm Python (libraries imported) that forks isolated clones on request; not the agent.

Started by the C++ PoolSpawner (pool_spawner.cc) as
  /usr/bin/python3 -I template.py --ctrl-fd 3 --lib libsandpool_clone.so --parent PID
      --data-bytes N --tmp-bytes N [--agent-path DIR] [--preload numpy,pandas,matplotlib.pyplot]
Protocol on the SOCK_SEQPACKET control socket (little-endian):
  spawner -> template, first: the seccomp BPF program (raw bytes).
  template -> spawner: b"READY" once imports and warm-up are done.
  spawner -> template: SPAWN = <QIII> generation, host uid, host gid, flags, with SCM_RIGHTS
      [agent socket, report pipe write end, cgroup.procs fds..., (netns fd if flags & 1)].
  template -> spawner: <Qii> generation, pid (or 0), errno, with SCM_RIGHTS [pidfd] on success.
The template runs as host root but never runs user code; all isolation happens in
C (libsandpool_clone.so) in the forked child, which then calls sandpool_agent.serve(fd)
(or an echo loop when the agent is not importable).
"""
import argparse
import ctypes
import gc
import os
import select
import signal
import socket
import struct
import sys

SPAWN = struct.Struct("<QIII")
F_NETNS = 1  # the last fd is a network namespace made ahead
REPLY = struct.Struct("<Qii")


class CloneParams(ctypes.Structure):
    _fields_ = [("host_uid", ctypes.c_uint32), ("host_gid", ctypes.c_uint32), ("agent_fd", ctypes.c_int32),
                ("report_fd", ctypes.c_int32), ("cgroup_fds", ctypes.c_int32 * 4), ("netns_fd", ctypes.c_int32)]


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


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--ctrl-fd", type=int, required=True)
    ap.add_argument("--lib", required=True)
    ap.add_argument("--parent", type=int, required=True)
    ap.add_argument("--data-bytes", type=int, required=True)
    ap.add_argument("--tmp-bytes", type=int, required=True)
    ap.add_argument("--agent-path", default="")
    ap.add_argument("--preload", default="numpy,pandas,matplotlib.pyplot")
    a = ap.parse_args()

    lib = ctypes.PyDLL(a.lib)  # PyDLL: the GIL stays held, nothing else runs during a call
    agent = os.path.abspath(a.agent_path).encode() if a.agent_path and os.path.isdir(a.agent_path) else None
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
    serve = None
    if agent:
        sys.path.insert(0, "/opt/sandpool/agent")  # where sp_tpl_init bound agent_path
    try:
        import sandpool_agent
        serve = sandpool_agent.serve
    except ImportError:
        serve = None
    gc.collect()
    gc.freeze()  # everything so far stays in the shared, never-collected generation

    r_wake, w_wake = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    signal.set_wakeup_fd(w_wake)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    ctrl.send(b"READY")

    while True:
        try:
            rd, _, _ = select.select([ctrl, r_wake], [], [])
        except InterruptedError:
            continue
        if r_wake in rd:
            while True:
                try:
                    os.read(r_wake, 512)
                except BlockingIOError:
                    break
            while True:
                try:
                    pid, _ = os.waitpid(-1, os.WNOHANG)
                except ChildProcessError:
                    break
                if pid == 0:
                    break
        if ctrl not in rd:
            continue
        try:
            msg, fds, _, _ = socket.recv_fds(ctrl, SPAWN.size, 8)
        except (ConnectionResetError, OSError):
            return 0
        if not msg:
            return 0  # the spawner went away
        gen, uid, gid, flags = SPAWN.unpack(msg)
        if len(fds) < 2:
            for fd in fds:
                os.close(fd)
            ctrl.send(REPLY.pack(gen, 0, 22))
            continue
        netns_fd = fds[-1] if flags & F_NETNS and len(fds) > 2 else -1
        agent_fd, report_fd, cg_fds = fds[0], fds[1], fds[2:len(fds) - (1 if netns_fd >= 0 else 0)][:4]
        rc = lib.sp_tpl_prefork()
        if rc != 0:
            for fd in fds:
                os.close(fd)
            ctrl.send(REPLY.pack(gen, 0, -rc))
            continue
        params = CloneParams(uid, gid, agent_fd, report_fd, (ctypes.c_int32 * 4)(*(cg_fds + [-1] * (4 - len(cg_fds)))),
                             netns_fd)
        pid = lib.sp_tpl_fork_clone(ctypes.byref(params))  # the child returns 0 once isolated
        if pid == 0:
            # The clone. The C side closed every fd but agent_fd; detach Python objects from them.
            signal.set_wakeup_fd(-1)
            ctrl.detach()
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
            if np is not None:
                np.random.seed()  # Python's random reseeds itself at fork; numpy's global RNG does not
            code = 1
            try:
                code = serve(agent_fd) if serve is not None else echo_loop(agent_fd)
            finally:
                os._exit(code or 0)
        if pid < 0:
            for fd in fds:
                os.close(fd)
            ctrl.send(REPLY.pack(gen, 0, -pid))
            continue
        pidfd = lib.sp_pidfd_open(pid)
        for fd in fds:
            os.close(fd)
        if pidfd < 0:
            socket.send_fds(ctrl, [REPLY.pack(gen, pid, -pidfd)], [])
        else:
            socket.send_fds(ctrl, [REPLY.pack(gen, pid, 0)], [pidfd])
            os.close(pidfd)


if __name__ == "__main__":
    sys.exit(main())
