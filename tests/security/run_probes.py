#!/usr/bin/python3
"""Hostile-probe suite: runs each probe inside `sandpool sandbox-run` and asserts it failed the expected way.

Not a unit test of the sandbox code: it attacks the real binary. Usage:
  run_probes.py SANDPOOL_BINARY PROBES_BINARY [-k SUBSTRING] [-v]
Exit: 0 all passed, 1 a probe escaped or a check failed, 77 skipped (no user
namespaces / cgroups / not root). Python 3 standard library only; run it with
Debian's /usr/bin/python3. Network probes touch only loopback and a network
namespace this script creates (and deletes).
"""
import argparse
import glob
import os
import re
import select
import signal
import socket
import subprocess
import sys
import time

SKIP = 77


class Runner:
    def __init__(self, sandpool, probes, verbose):
        self.sandpool = os.path.abspath(sandpool)
        self.probes = os.path.abspath(probes)
        self.verbose = verbose
        self.failures = []
        self.passed = 0
        # tools/test.sh's ASan build: LeakSanitizer cannot run under the sandbox's seccomp filter
        # (it stops the world with ptrace), so the sandbox's init and the probes run without it.
        with open(self.sandpool, "rb") as f:
            sanitized = b"libasan.so" in f.read()
        self.env_args = ["--env", "ASAN_OPTIONS=detect_leaks=0"] if sanitized else []
        self.sanitized = sanitized

    def argv(self, args, cmd):
        """sandbox-run's command line: the probes bound in, `args`, then `cmd`."""
        return ([self.sandpool, "sandbox-run", "--report", "--ro-bind", self.probes + ":/probes/probes"] +
                self.env_args + list(args) + ["--"] + list(cmd))

    def run(self, args, probe=None, cmd=None, timeout=60, stdin=subprocess.DEVNULL, pass_fds=()):
        """Runs one sandbox; returns (stdout, result dict from --report)."""
        argv = self.argv(args, ["/probes/probes"] + probe if probe else cmd)
        p = subprocess.run(argv, stdin=stdin, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=timeout,
                           pass_fds=pass_fds, text=True)
        m = re.search(r"sandpool-result (.*)", p.stderr)
        res = dict(kv.split("=", 1) for kv in m.group(1).split()) if m else {"status": "NoReport"}
        res["stderr"] = p.stderr
        res["rc"] = p.returncode
        return p.stdout, res

    def check(self, name, ok, detail=""):
        if ok:
            self.passed += 1
            print(f"ok   {name}")
        else:
            self.failures.append(name)
            print(f"FAIL {name}\n{detail}")

    def probe_blocked(self, name, probe, args=(), pass_fds=()):
        out, res = self.run(list(args), probe=probe, pass_fds=pass_fds)
        blocked = out.count("BLOCKED")
        ok = res["status"] == "Exited" and res.get("exit_code") == "0" and "ESCAPED" not in out and blocked > 0
        if self.verbose:
            print(out, end="")
        self.check(f"{name} ({blocked} attempts blocked)", ok, out + res["stderr"])
        return out, res


def ensure_supported(r):
    if os.geteuid() != 0:
        print("SKIP: the sandbox needs root here (per-sandbox cgroups and host uid ranges)")
        sys.exit(SKIP)
    try:
        out, res = r.run([], cmd=["/bin/true"], timeout=30)
    except OSError as e:
        print(f"SKIP: cannot run {r.sandpool}: {e}")
        sys.exit(SKIP)
    if res["status"] != "Exited":
        err = res["stderr"]
        if "clone3" in err or "cgroup" in err or "user" in err.lower():
            print(f"SKIP: user namespaces or cgroups unavailable: {err.strip()}")
            sys.exit(SKIP)
        print(f"sandbox-run does not work at all: {err}")
        sys.exit(1)


def children_of(pid):
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(x) for x in f.read().split()]
    except OSError:
        return []


def descendants(pid):
    out, todo = [], [pid]
    while todo:
        for c in children_of(todo.pop()):
            out.append(c)
            todo.append(c)
    return out


def start_background(r, args, cmd, ready_word):
    """Starts a sandbox that prints ready_word when set up; returns the Popen."""
    p = subprocess.Popen(r.argv(args, cmd), stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = p.stdout.readline()  # blocks until the sandbox speaks: no sleeping
    if ready_word not in line:
        p.kill()
        raise RuntimeError(f"background sandbox did not start: {line!r} {p.stderr.read()}")
    return p


def stop_background(p):
    try:
        p.stdin.close()
    except OSError:
        pass
    p.send_signal(signal.SIGTERM)  # sandbox-run has no handler: it dies, and PDEATHSIG takes the sandbox
    p.wait(timeout=10)


class NetNs:
    """A network namespace with a veth to the host and a TCP listener inside: an 'outside' address."""

    def __init__(self):
        tag = os.getpid() % 10000
        self.ns = f"sp-sec-{tag}"
        self.host_if, self.ns_if = f"spsa{tag}", f"spsb{tag}"
        octet = tag % 250 + 1
        self.host_ip, self.ns_ip = f"10.231.{octet}.1", f"10.231.{octet}.2"
        self.listener = None

    def __enter__(self):
        def ip(*a):
            subprocess.run(["ip"] + list(a), check=True, capture_output=True)
        ip("netns", "add", self.ns)
        ip("link", "add", self.host_if, "type", "veth", "peer", "name", self.ns_if)
        ip("link", "set", self.ns_if, "netns", self.ns)
        ip("addr", "add", f"{self.host_ip}/30", "dev", self.host_if)
        ip("link", "set", self.host_if, "up")
        ip("netns", "exec", self.ns, "ip", "addr", "add", f"{self.ns_ip}/30", "dev", self.ns_if)
        ip("netns", "exec", self.ns, "ip", "link", "set", self.ns_if, "up")
        ip("netns", "exec", self.ns, "ip", "link", "set", "lo", "up")
        code = ("import socket,sys\ns=socket.socket()\ns.bind(('0.0.0.0',0))\ns.listen(8)\n"
                "print(s.getsockname()[1],flush=True)\nwhile True:\n c,_=s.accept(); c.close()\n")
        self.listener = subprocess.Popen(["ip", "netns", "exec", self.ns, "/usr/bin/python3", "-c", code],
                                         stdout=subprocess.PIPE, text=True)
        self.port = int(self.listener.stdout.readline())
        return self

    def __exit__(self, *exc):
        if self.listener:
            self.listener.kill()
            self.listener.wait()
        subprocess.run(["ip", "link", "del", self.host_if], capture_output=True)
        subprocess.run(["ip", "netns", "del", self.ns], capture_output=True)


POOL_SYSCALLS = """
import ctypes, errno
libc = ctypes.CDLL(None, use_errno=True)
def sc(nr, *args):
    ctypes.set_errno(0)
    ret = libc.syscall(nr, *[ctypes.c_long(a) for a in args])
    return ret, ctypes.get_errno()
calls = {'mount': (165, 0, 0, 0, 0, 0), 'unshare(NEWUSER)': (272, 0x10000000), 'ptrace(ATTACH,1)': (101, 16, 1, 0, 0),
         'bpf': (321, 0, 0, 0), 'io_uring_setup': (425, 8, 0), 'keyctl': (250, 0, 0), 'perf_event_open': (298, 0, -1, -1, 0, 0),
         'setuid(0)': (105, 0), 'init_module': (175, 0, 0, 0), 'reboot': (169, 0xfee1dead, 672274793, 0x1234567, 0),
         'swapon': (167, 0, 0), 'chroot': (161, 0), 'pivot_root': (155, 0, 0), 'setns': (308, 0, 0),
         'userfaultfd': (323, 0), 'kexec_load': (246, 0, 0, 0, 0), 'add_key': (248, 0, 0, 0, 0, 0),
         'clock_settime': (227, 0, 0), 'personality(READ_IMPLIES_EXEC)': (135, 0x0400000), 'ioctl(TIOCSTI)': (16, 0, 0x5412, 0)}
result = sorted(name for name, a in calls.items() if sc(*a) != (-1, errno.EPERM))
"""


def pool_agent_hello(r, helper, agent_dir):
    """With the real agent importable, a clone must greet with the agent protocol's Hello frame."""
    env = dict(os.environ, SANDPOOL_AGENT_PATH=agent_dir)
    p = subprocess.run([helper, "1"], input="read 0\n", stdout=subprocess.PIPE, text=True, env=env, timeout=120)
    lines = p.stdout.split("\n")
    magic = lines[1][:8] if len(lines) > 1 else ""
    r.check(f"pool: clone runs sandpool_agent.serve(fd) from {agent_dir} (first bytes {magic})",
            magic == "53505031", p.stdout)


def pool_full_preload(r, helper):
    """A clone of the full template (numpy, pandas, matplotlib) works: plot to PNG, pandas, numpy."""
    env = dict(os.environ, SANDPOOL_PRELOAD="numpy,pandas,matplotlib.pyplot")
    code = ("import io, numpy, pandas, matplotlib.pyplot as plt\x01plt.plot(numpy.arange(10))\x01b = io.BytesIO()\x01"
            "plt.savefig(b, format='png')\x01result = (b.getvalue()[:4], int(pandas.DataFrame({'a': [1, 2]}).a.sum()))")
    p = subprocess.run([helper, "1"], input=f"exec 0 {code}\n", stdout=subprocess.PIPE, text=True, env=env, timeout=120)
    lines = p.stdout.split("\n")
    got = lines[1] if len(lines) > 1 else p.stdout
    r.check(f"pool: a clone of the numpy+pandas+matplotlib template plots and computes ({got})",
            got == "(b'\\x89PNG', 3)", p.stdout)


def pool_probes(r, helper):
    """Probes run inside warm-template clones (the server's path), through the echo stand-in agent."""
    agent_dir = os.environ.pop("SANDPOOL_AGENT_PATH", "")
    if agent_dir and os.path.exists(os.path.join(agent_dir, "sandpool_agent.py")):
        pool_agent_hello(r, helper, agent_dir)
    pool_full_preload(r, helper)
    env = dict(os.environ)
    p = subprocess.Popen([helper, "3"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
    line = p.stdout.readline().split()
    if not line or line[0] != "ready":
        r.check("pool: helper started 3 clones", False, " ".join(line))
        p.kill()
        return
    tpl_pid, clone_pids = int(line[1]), [int(x) for x in line[2:]]

    def ex(i, code):
        p.stdin.write(f"exec {i} " + code.replace("\n", "\x01") + "\n")
        p.stdin.flush()
        return p.stdout.readline().strip()

    def cmd(c):
        p.stdin.write(c + "\n")
        p.stdin.flush()
        return p.stdout.readline().strip()

    try:
        got = ex(0, "import os\nres = []\nfor f in ('/etc/shadow', '/root', '/work', '/home', '/sys'):\n"
                    " try: open(f); res.append(f)\n except OSError as e: res.append(e.errno)\nresult = res")
        r.check(f"pool: host files unreachable from a clone ({got})", got == "[2, 2, 2, 2, 2]", got)
        got = ex(0, "import os; result = sorted(int(x) for x in os.listdir('/proc') if x.isdigit())")
        r.check(f"pool: a clone sees only itself as pid 1 ({got})", got == "[1]", got)
        got = ex(0, "st = dict(l.split(':\\t', 1) for l in open('/proc/self/status').read().splitlines() if ':\\t' in l)\n"
                    "result = sorted((k, v.strip()) for k, v in st.items() if k.startswith('Cap') or k in ('NoNewPrivs', 'Seccomp'))")
        want = str(sorted([(k, "0000000000000000") for k in ("CapAmb", "CapBnd", "CapEff", "CapInh", "CapPrm")] +
                          [("NoNewPrivs", "1"), ("Seccomp", "2")]))
        r.check(f"pool: a clone holds no capability, bounding set included, with no_new_privs and its filter ({got})",
                got == want, got)
        # The template's memory, which every clone maps copy-on-write (template_memory.cc): a
        # clone cannot reach the file behind it to change what the others see.
        got = ex(0, "import os\nres = []\nfor l in open('/proc/self/maps'):\n"
                    " if 'memfd:sandpool-template' in l:\n"
                    "  lo, hi = (int(x, 16) for x in l.split()[0].split('-'))\n"
                    "  try: os.open('/proc/self/map_files/%x-%x' % (lo, hi), os.O_RDWR); res.append('opened')\n"
                    "  except OSError as e: res.append(e.errno)\nresult = sorted(set(res)) if res else 'no shared mappings'")
        r.check(f"pool: a clone cannot open the template's memory file behind its mappings ({got})",
                got in ("[1]", "[13]", "[1, 13]"), got)
        got = ex(0, POOL_SYSCALLS)
        r.check(f"pool: privileged syscalls fail with EPERM in a clone (deviations: {got})", got == "[]", got)
        srv = socket.socket()
        srv.bind(("127.0.0.1", 0))
        srv.listen(1)
        got = ex(0, "import socket\ns = socket.socket()\ntry: s.connect(('127.0.0.1', %d)); result = 'connected'\n"
                    "except OSError as e: result = (e.errno, [l.split(':')[0].strip() for l in open('/proc/net/dev').readlines()[2:]])" % srv.getsockname()[1])
        srv.close()
        r.check(f"pool: host port on 127.0.0.1 unreachable, only lo ({got})", got == "(111, ['lo'])", got)
        got = ex(0, "import os\nres = []\nfor f in ('/usr/bin/evil', '/evil', '/etc/passwd'):\n"
                    " try: open(f, 'w'); res.append(f)\n except OSError as e: res.append(e.errno)\nresult = res")
        r.check(f"pool: read-only runtime in a clone ({got})", got in ("[30, 30, 30]", "[30, 30, 13]"), got)
        got = ex(0, "import os\nres = []\nfor f in os.listdir('/proc/self/fd'):\n"
                    " try: res.append(os.readlink('/proc/self/fd/' + f).split(':')[0])\n except OSError: pass\n"
                    "result = sorted(res)")
        r.check(f"pool: a clone holds no inherited fds beyond stdio and its socket ({got})",
                got == "['/dev/null', '/dev/null', '/dev/null', 'socket']", got)
        bind = ("import socket, sys\ns = socket.socket()\ntry:\n s.bind(('127.0.0.1', 5000)); s.listen(1)\n"
                " sys.__dict__.setdefault('kept', []).append(s); result = 'bound'\nexcept OSError as e: result = e.errno")
        binds = [ex(0, bind), ex(1, bind), ex(0, bind)]  # the third (clone 0 again) must find the port taken
        r.check(f"pool: each clone has its own network namespace (bind 127.0.0.1:5000 in 0, 1, 0 again: {binds})",
                binds == ["'bound'", "'bound'", "98"], str(binds))
        ex(0, "open('/mnt/data/secret', 'w').write('x'); result = 1")
        got = ex(1, "import os; result = [os.path.exists('/mnt/data/secret'), os.path.exists('/proc/%d/root/mnt/data/secret')]"
                 % clone_pids[0])
        r.check(f"pool: another clone's /mnt/data is invisible ({got})", got == "[False, False]", got)
        uids = [ex(i, "import os; result = os.getuid()") for i in range(2)]
        r.check(f"pool: clones run as distinct unprivileged host uids ({uids})",
                uids[0] != uids[1] and all(u.isdigit() and int(u) >= 1000000 for u in uids), str(uids))
        got = ex(1, "import errno\nf = open('/mnt/data/fill', 'wb')\nn = 0\ntry:\n while True: f.write(b'x' * 65536); f.flush(); n += 65536\n"
                    "except OSError as e: result = (e.errno, n <= 8 << 20)")
        r.check(f"pool: filling /mnt/data stops with ENOSPC at the quota ({got})", got == "(28, True)", got)
        got = ex(2, "b = bytearray(512 << 20); result = 'allocated'")
        exited, ooms = cmd("wait-exit 2"), cmd("oom 2")
        r.check(f"pool: a memory bomb kills only that clone, seen as an OOM kill (reply {got}, exited {exited}, "
                f"oom_kills {ooms})",
                got == "<eof>" and exited == "1" and ooms.isdigit() and int(ooms) >= 1 and cmd("alive 0") == "1", got)
        # The template is killed (its own clones die with it); the spawner starts a new one and refills.
        old = [os.pidfd_open(pid) for pid in clone_pids[:2]]
        got = cmd("kill-template 2").split()
        dead, _, _ = select.select(old, [], [], 5.0)
        for fd in old:
            os.close(fd)
        r.check(f"pool: a killed template takes its clones along, is restarted, refill goes on ({got})",
                len(got) == 5 and got[0] == "2" and got[1] != got[2] and len(dead) == 2, str(got))
        if len(got) == 5:
            tpl_pid, clone_pids = int(got[2]), [int(x) for x in got[3:]]
        # Die with the server: SIGKILL the process that owns the pool.
        fds = [os.pidfd_open(pid) for pid in [tpl_pid] + clone_pids[:2]]
        t0 = time.monotonic()
        p.kill()
        p.wait()
        pending = set(fds)
        while pending and time.monotonic() - t0 < 1.0:
            ready, _, _ = select.select(list(pending), [], [], max(0.0, 1.0 - (time.monotonic() - t0)))
            pending -= set(ready)
        for fd in fds:
            os.close(fd)
        r.check(f"pool: SIGKILL of the pool's owner ends its template and clones within 1 s "
                f"({(time.monotonic() - t0) * 1000:.0f} ms)", not pending, "")
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
        remove_owner_cgroups(p.pid)


def remove_owner_cgroups(pid, wait_s=3.0):
    """The killed owner left its (now empty) cgroup directories, which a server would reclaim at
    its next start: remove them, deepest first (rmdir only; a cgroup still busy is retried)."""
    deadline = time.monotonic() + wait_s
    for top in glob.glob("/sys/fs/cgroup/*/sandpool/o%d_*" % pid) + glob.glob("/sys/fs/cgroup/sandpool/o%d_*" % pid):
        dirs = sorted((d for d, _, _ in os.walk(top)), key=len, reverse=True)
        for d in dirs:
            while True:
                try:
                    os.rmdir(d)
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        break
                    time.sleep(0.02)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("sandpool")
    ap.add_argument("probes")
    ap.add_argument("-k", default="")
    ap.add_argument("-v", action="store_true")
    ap.add_argument("--pool-helper", default="", help="tests/security/pool_helper: also probe warm-template clones")
    a = ap.parse_args()
    r = Runner(a.sandpool, a.probes, a.v)
    ensure_supported(r)
    want = lambda name: a.k in name

    # Positive controls: the probes must not pass merely because nothing works.
    if want("control"):
        out, res = r.run([], cmd=["/usr/bin/python3", "-c",
                                  "import numpy, pandas, matplotlib.pyplot as p, os, sys;"
                                  "p.plot([1,2]); p.savefig('/mnt/data/x.png');"
                                  "print(os.getcwd(), os.getuid(), sys.stdout.isatty(), os.listdir('/mnt/data'))"])
        r.check("control: python+numpy+pandas+matplotlib run, cwd /mnt/data, uid 1000",
                res["status"] == "Exited" and "/mnt/data 1000 False ['x.png']" in out, out + res["stderr"])

    if want("control-respawn"):
        out, res = r.run(["--respawn", "1"], cmd=["/bin/sh", "-c", "if [ -f /mnt/data/once ]; then echo second; exit 0; fi;"
                                                  " touch /mnt/data/once; kill -SEGV $$"])
        r.check("control: init restarts a crashed command once, /mnt/data survives",
                res["status"] == "Exited" and out.strip() == "second", out + res["stderr"])
        out, res = r.run([], cmd=["/bin/sh", "-c", "sleep 100 & sleep 100 & exit 7"])
        r.check("control: init ends orphans with the command and propagates its exit status",
                res["status"] == "Exited" and res.get("exit_code") == "7", str(res))

    if want("control-rootfs"):
        busybox = "/bin/busybox"
        if r.sanitized:  # a rootfs has no /usr: its init must be the static sandpool-init
            print("skip control-rootfs: the ASan build has no static sandpool-init")
        elif os.path.exists(busybox):
            import shutil
            import tempfile
            with tempfile.TemporaryDirectory(prefix="sandpool-rootfs-") as root:
                os.chmod(root, 0o755)  # the sandbox's host uid is unprivileged: an image must be world-readable
                os.makedirs(f"{root}/bin")
                os.makedirs(f"{root}/etc")
                shutil.copy(busybox, f"{root}/bin/busybox")
                os.symlink("busybox", f"{root}/bin/sh")
                with open(f"{root}/etc/motd", "w") as f:
                    f.write("from the image\n")
                out, res = r.run(["--rootfs", root], cmd=["/bin/busybox", "sh", "-c",
                                                            "cat /etc/motd; ls /; ls /usr 2>&1 | head -1; echo x > /bin/y"])
                r.check("control: --rootfs DIR is the whole runtime, read-only (no host /usr)",
                        "from the image" in out and "bin\ndev\netc\nmnt\nprobes\nproc\ntmp" in out
                        and "No such file" in out and "Read-only" in res["stderr"], out + res["stderr"])
        else:
            print("skip control-rootfs: /bin/busybox (busybox-static) not installed")

    bin_dir = os.path.dirname(r.sandpool)
    if want("host-files"):
        r.probe_blocked("host-files: /etc/shadow, /root, /home, /sys, server binary dir, /proc/1/*",
                        ["host-files", r.sandpool, bin_dir, os.path.dirname(bin_dir), "/etc/shadow"])
    if want("host-procs"):
        r.probe_blocked("host-procs: see or signal host processes", ["host-procs", str(os.getpid()), str(os.getppid())])
    if want("ptrace"):
        r.probe_blocked("ptrace / process_vm_readv", ["ptrace"])
    if want("mounts"):
        r.probe_blocked("mount, unshare, setns, clone(NEWUSER), pivot_root, chroot", ["mounts"])
    if want("kernel"):
        r.probe_blocked("kernel interfaces: modules, kexec, bpf, perf, userfaultfd, io_uring, keys, clock, reboot, swap,"
                        " personality, setuid", ["kernel"])
    if want("devices"):
        r.probe_blocked("devices: /dev/mem, /dev/kvm, raw/packet sockets, netlink but route reads, TIOCSTI, /proc/sys writes", ["devices"])
    if want("readonly"):
        r.probe_blocked("read-only runtime and setuid tricks", ["readonly"])
    if want("symlink"):
        r.probe_blocked("symlink in /mnt/data pointing outside", ["symlink"])
    if want("fds"):
        secret = open(__file__, "rb")
        os.set_inheritable(secret.fileno(), True)
        r.probe_blocked("inherited file descriptors (/proc/self/fd)", ["fds"], pass_fds=(secret.fileno(),))
        secret.close()
    for name in ("int80", "x32"):
        if want(name):
            out, res = r.run([], probe=[name])
            r.check(f"{name}: foreign-ABI syscall kills the process with SIGSYS",
                    res["status"] == "Signaled" and res.get("signal") == str(int(signal.SIGSYS)) and "ESCAPED" not in out,
                    out + res["stderr"])

    if want("connect"):
        # The "server's own port" and another host port, both on the host's 127.0.0.1.
        srv = socket.socket()
        srv.bind(("127.0.0.1", 0))
        srv.listen(4)
        port = srv.getsockname()[1]
        other = socket.socket()
        other.bind(("127.0.0.1", 0))
        other.listen(4)
        r.probe_blocked("connect to the server's port and another host port on 127.0.0.1",
                        ["connect", f"127.0.0.1:{port}", f"127.0.0.1:{other.getsockname()[1]}"])
        srv.close()
        other.close()
    if want("outside"):
        try:
            with NetNs() as ns:
                with socket.create_connection((ns.ns_ip, ns.port), timeout=5):
                    pass  # reachable from the host: the probe below is meaningful
                r.probe_blocked(f"reach an outside address ({ns.ns_ip}, {ns.host_ip}) in a test netns",
                                ["connect", f"{ns.ns_ip}:{ns.port}=ENETUNREACH", f"{ns.host_ip}:{ns.port}=ENETUNREACH"])
        except (subprocess.CalledProcessError, OSError) as e:
            print(f"skip outside-address probe: cannot build a test netns: {e}")

    if want("other-session"):
        tag = f"secret-{os.getpid()}"
        a_sb = start_background(r, [], ["/bin/sh", "-c", f"echo s > /mnt/data/{tag}; echo s > /tmp/{tag}; echo ready; read x"],
                                "ready")
        try:
            pids = [str(p) for p in descendants(a_sb.pid)]
            r.probe_blocked("another session's /mnt/data and /tmp", ["other-session", tag] + pids)
            out, res = r.run([], probe=["host-procs"] + pids)
            r.check("signal another session's processes", "ESCAPED" not in out and res.get("exit_code") == "0", out)
        finally:
            stop_background(a_sb)

    # Resource attacks.
    if want("forkbomb"):
        out, res = r.run(["--pids", "64", "--timeout", "20"], probe=["forkbomb", "64"])
        r.check("fork bomb stops at the pids limit (EAGAIN)", "BLOCKED fork bomb" in out and "ESCAPED" not in out,
                out + res["stderr"])
        t0 = time.monotonic()
        out, res = r.run(["--pids", "64", "--timeout", "2"], cmd=["/bin/sh", "-c", "f() { f | f & }; f; wait"])
        elapsed = time.monotonic() - t0
        r.check(f"shell fork bomb is contained (pids.max) and over within its 2 s timeout ({res['status']}, {elapsed:.2f} s)",
                res["status"] in ("Exited", "Timeout", "Signaled") and elapsed < 4, str(res)[:500])
    if want("memory"):
        out, res = r.run(["--memory", "64m"], cmd=["/usr/bin/python3", "-c", "b = bytearray(512 << 20); print('ESCAPED')"])
        r.check("memory bomb is reported as OutOfMemory", res["status"] == "OutOfMemory" and "ESCAPED" not in out,
                str(res))
    if want("fill"):
        r.probe_blocked("fill /mnt/data: ENOSPC inside at the quota", ["fill-data", str(8 << 20)], ["--data-size", "8m"])
        out, res = r.run([], cmd=["/bin/true"])
        r.check("server fine after a full /mnt/data", res["status"] == "Exited", str(res))
    if want("cpu"):
        def latency():
            out, res = r.run(["--cpu", "1"], probe=["latency", "150"])
            m = re.search(r"median_us (\d+)", out)
            return int(m.group(1)) if m else None
        # Idle and loaded runs alternate, three of each, and their medians are compared: on a VM
        # one run's median moves by 1.5x with the machine (190-390 µs idle here), so a single idle
        # run against the best of two loaded ones failed now and then at 2.1x.
        idle, loaded = [], []
        for _ in range(3):
            idle.append(latency())
            burner = start_background(r, ["--cpu", "1"], ["/probes/probes", "burn", "4"], "burning")
            try:
                loaded.append(latency())
            finally:
                stop_background(burner)
        ok = None not in idle and None not in loaded
        idle_us = sorted(idle)[1] if ok else None
        loaded_us = sorted(loaded)[1] if ok else None
        r.check(f"CPU burn in one sandbox (4 spinners, --cpu 1): another's latency {loaded_us} µs vs idle {idle_us} µs "
                f"(medians of {loaded} and {idle}; ≤ 2×)", ok and loaded_us <= 2 * idle_us, "")

    if want("die-with-parent"):
        p = start_background(r, [], ["/bin/sh", "-c", "sleep 1000 & sleep 1000 & echo ready; wait"], "ready")
        inner = descendants(p.pid)
        fds = [os.pidfd_open(pid) for pid in inner]
        t0 = time.monotonic()
        p.send_signal(signal.SIGKILL)
        p.wait()
        pending = set(fds)
        while pending and time.monotonic() - t0 < 1.0:
            ready, _, _ = select.select(list(pending), [], [], max(0.0, 1.0 - (time.monotonic() - t0)))
            pending -= set(ready)
        for fd in fds:
            os.close(fd)
        r.check(f"SIGKILL of sandbox-run: all {len(inner)} sandbox processes gone within 1 s "
                f"({(time.monotonic() - t0) * 1000:.0f} ms)", len(inner) >= 3 and not pending, str(inner))
        # The next run reclaims the dead run's cgroups.
        dead = [d for d in os.listdir("/sys/fs/cgroup/pids/sandpool") if d.startswith(f"o{p.pid}_")] \
            if os.path.isdir("/sys/fs/cgroup/pids/sandpool") else []
        r.run([], cmd=["/bin/true"])
        left = [d for d in dead if os.path.exists(f"/sys/fs/cgroup/pids/sandpool/{d}")]
        r.check("leftover cgroups of a killed run are reclaimed by the next run", not left, str(left))

    if a.pool_helper and want("pool"):
        pool_probes(r, a.pool_helper)

    print(f"\n{r.passed} passed, {len(r.failures)} failed")
    for f in r.failures:
        print(f"  failed: {f}")
    return 1 if r.failures else 0


if __name__ == "__main__":
    sys.exit(main())
