#!/usr/bin/python3
"""Hostile probes aimed at the VMM, run through a micro-VM pool's execute path (issue 6 E).

A guest cannot exec, so every probe is Python code (ctypes raw syscalls, machine code in an
executable mapping) sent as a cell. Each probe must end the way Linux would end it (an error
return, or the interpreter killed by the right signal and replaced: InterpreterCrashed, variables
lost, /mnt/data kept), never the VMM: after every probe the same session must run the next cell,
and at the end the VMM processes must still be confined (seccomp filter, no capabilities,
unprivileged uid). Usage: microvm_probes.py SANDPOOL_BINARY [-v]. Exit 77 without /dev/kvm.
"""
import json
import os
import signal
import sys
import time
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "integration"))
import harness  # noqa: E402

SKIP = 77
# The VMM watcher thread's uid: src/sandbox/userns.h kHostIdBase - 1 (pool_template.cc, drop_own_ids).
WATCHER_UID = 2000000 - 1

PRELUDE = r"""
import ctypes, errno, json, mmap, os
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
def sc(nr, *args):
    ctypes.set_errno(0)
    r = libc.syscall(ctypes.c_long(nr), *[ctypes.c_ulong(a & (2**64 - 1)) for a in args])
    return r, ctypes.get_errno()
def machine_code(code):
    m = mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
    m.write(code)
    addr = ctypes.addressof(ctypes.c_char.from_buffer(m))
    return m, addr
"""

# Addresses no guest pointer may name: null page, the page tables (0x1000), GDT/IDT/TSS/stubs,
# the last byte of the supervisor area, far past guest memory, non-canonical, kernel half, top.
BAD_POINTERS = [0x1, 0x1000, 0x13000, 0x18000, 0x1FFFFF, 0x7F0000000000, 0x800000000000, 0xFFFF800000000000,
                0xFFFFFFFFFFFFF000]

POINTER_PROBES = PRELUDE + r"""
zero = os.open('/dev/zero', os.O_RDONLY)
null = os.open('/dev/null', os.O_WRONLY)
a, b = __import__('socket').socketpair()
out = []
for p in %(ptrs)r:
    calls = [(0, zero, p, 64), (1, null, p, 64), (257, -100, p, 0), (4, p, p), (6, p, p), (63, p), (228, 0, p),
             (13, 10, p, p, 8), (14, 0, p, p, 8), (79, p, 100), (22, p), (19, zero, p, 1), (20, null, p, 1), (7, p, 1, 0),
             (318, p, 16, 0), (44, a.fileno(), p, 8, 0, 0, 0), (45, b.fileno(), p, 8, 0x40, 0, 0),
             (46, a.fileno(), p, 0), (47, b.fileno(), p, 0), (89, p, p, 64), (96, p, 0), (217, zero, p, 64),
             (232, 1, p, 8, 0), (270, 1, p, p, p, p, p), (271, p, 1, p, p, 8), (332, -100, p, 0, 0x7ff, p),
             (39,)]
    for c in calls[:-1]:
        r, e = sc(*c)
        out.append((c[0], hex(p), r, e))
json.dumps([o for o in out if not (o[2] == -1 and o[3] in (errno.EFAULT, errno.EINVAL, errno.EBADF, errno.ENOENT, errno.ENAMETOOLONG, errno.ENOTSOCK, errno.EAGAIN, errno.ENOSYS))])
"""

HUGE_LENGTH_PROBES = PRELUDE + r"""
zero = os.open('/dev/zero', os.O_RDONLY)
null = os.open('/dev/null', os.O_WRONLY)
buf = ctypes.create_string_buffer(64)
B = ctypes.addressof(buf)
path = ctypes.create_string_buffer(b'/proc/self/exe')
P = ctypes.addressof(path)
out = []
# Lengths no guest memory can hold (Linux would copy until the first unmapped page; here every
# guest address is mapped, so a length that fits would scribble over the caller's own heap, as
# getrandom(2) with a short buffer does on Linux: not probed).
for n in (1 << 40, 1 << 62, 2**64 - 1, 2**63):
    for c in [(0, zero, B, n), (1, null, B, n), (17, null, zero, B, n), (89, P, B, n), (16, zero, 0x541B, B + n),
              (9, 0, n, 3, 0x22, -1, 0), (25, B, 64, n, 1), (28, B, n, 4), (10, B, n, 7), (11, B, n),
              (217, zero, B, n), (19, zero, B, n), (45, 0, B, n, 0, 0, 0), (270, n, B, B, B, B, 0)]:
        r, e = sc(*c)
        if r != -1 or e not in (errno.EFAULT, errno.EINVAL, errno.ENOMEM, errno.EOVERFLOW, errno.ERANGE, errno.EBADF, errno.ENOTSOCK, errno.ENOENT, errno.ENOSYS, errno.ENOTTY):
            out.append((c[0], hex(n), r, e))
json.dumps(out)
"""

RAW_NUMBER_PROBES = PRELUDE + r"""
out = []
for nr in list(range(335, 424)) + [450, 600, 1000, 4096, 0x40000000 | 1, 0x40000000 | 59, 2**31 - 1, 2**32 + 1, 2**63, 2**64 - 1] + [56, 57, 58, 59, 322, 435, 101, 310, 311, 165, 166, 169, 175, 246, 321, 425, 426, 427]:
    r, e = sc(nr, 0, 0, 0, 0, 0, 0)
    if r != -1 or e not in (errno.ENOSYS, errno.EPERM, errno.EFAULT, errno.EINVAL):
        out.append((nr, r, e))
json.dumps(out)
"""

ESCAPE_PROBES = PRELUDE + r"""
out = {}
for path in ('/dev/kvm', '/proc/self/mem', '/proc/1/mem', '/proc/self/fd/0', '/proc/self/exe', '/proc/self/environ',
             '/sys/kernel', '/dev/mem', '/etc/shadow'):
    try:
        fd = os.open(path, os.O_RDWR)
        out[path] = 'opened'
        os.close(fd)
    except OSError as e:
        out[path] = e.errno
# Descriptors the guest can name: none may be /dev/kvm (char 10:232) or a KVM object (anon inode).
st = ctypes.create_string_buffer(256)
kvmish = []
for fd in range(0, 1024):
    if sc(5, fd, ctypes.addressof(st))[0] == 0:
        mode = int.from_bytes(st.raw[24:28], 'little')
        rdev = int.from_bytes(st.raw[40:48], 'little')
        link = ''
        if (mode & 0o170000) == 0o020000 and rdev == os.makedev(10, 232):
            kvmish.append(fd)
        if mode & 0o170000 == 0:  # anon inodes (kvm-vm, kvm-vcpu) have no file type
            kvmish.append(fd)
json.dumps({'opens': out, 'kvm_fds': kvmish})
"""

# Probes that must kill the interpreter with a given signal (the VMM itself lives on).
CRASH_PROBES = {
    "write to the page tables": ("ctypes.memmove(0x1000, b'\\xff' * 8, 8)", (11,)),
    "write to the GDT": ("ctypes.memmove(0x13000, b'\\0' * 16, 16)", (11,)),
    "write to the stub page": ("ctypes.memmove(0x18000, b'\\xcc' * 16, 16)", (11,)),
    "read of the supervisor area": ("ctypes.string_at(0x1FF000, 16)", (11,)),
    "int 0x80": ("m, a = machine_code(b'\\xb8\\x01\\x00\\x00\\x00\\xcd\\x80\\xc3')\nctypes.CFUNCTYPE(None)(a)()", (4, 11)),
    "int3": ("m, a = machine_code(b'\\xcc\\xc3')\nctypes.CFUNCTYPE(None)(a)()", (5,)),
    "int 0x2e": ("m, a = machine_code(b'\\xcd\\x2e\\xc3')\nctypes.CFUNCTYPE(None)(a)()", (4, 11)),
    "hlt": ("m, a = machine_code(b'\\xf4\\xc3')\nctypes.CFUNCTYPE(None)(a)()", (11,)),
    "cli": ("m, a = machine_code(b'\\xfa\\xc3')\nctypes.CFUNCTYPE(None)(a)()", (11,)),
    "wrmsr": ("m, a = machine_code(b'\\xb9\\x82\\x00\\x00\\xc0\\x31\\xc0\\x31\\xd2\\x0f\\x30\\xc3')\nctypes.CFUNCTYPE(None)(a)()", (11,)),
    "jump into the stub page": ("ctypes.CFUNCTYPE(None)(0x18000)()", (11,)),
    "forged rt_sigreturn": ("m, a = machine_code(b'\\x48\\x31\\xe4\\xb8\\x0f\\x00\\x00\\x00\\x0f\\x05\\xc3')\n"
                            "ctypes.CFUNCTYPE(None)(a)()", (11,)),
    # A native SIGUSR1 handler that writes to address 0: the fault happens inside the handler.
    "fault in a signal handler": ("m, a = machine_code(b'\\xc6\\x04\\x25\\x00\\x00\\x00\\x00\\x00\\xc3')\n"
                                  "libc.signal.argtypes = [ctypes.c_int, ctypes.c_void_p]\n"
                                  "libc.signal(10, a)\nos.kill(os.getpid(), 10)", (11,)),
    # A SIGSEGV handler that faults again: SIGSEGV is blocked in its own handler.
    "fault in the SIGSEGV handler": ("m, a = machine_code(b'\\xc6\\x04\\x25\\x08\\x00\\x00\\x00\\x00\\xc3')\n"
                                     "libc.signal.argtypes = [ctypes.c_int, ctypes.c_void_p]\n"
                                     "libc.signal(11, a)\nctypes.string_at(0x10, 1)", (11,)),
}


def execute(srv, ident, code, timeout=60):
    body = {"properties": {"codeInputType": "inline", "executionType": "synchronous", "code": code,
                           "timeoutInSeconds": timeout}}
    r, j = srv.json("POST", "/code/execute?identifier=%s" % ident, body)
    return r, j


def proc_status(pid):
    """/proc/PID/status as a dict of its "Name:\tvalue" lines (OSError when the process is gone)."""
    with open("/proc/%s/status" % pid) as f:
        return dict(line.split(":\t", 1) for line in f.read().splitlines() if ":\t" in line)


class VmmProbes(harness.ServerTestCase, unittest.TestCase):
    SERVER_FLAGS = ("--pool-ready", "2", "--pool-isolation", "microvm")
    POOLS = True

    def run_cell(self, ident, code):
        r, j = execute(self.srv, ident, code)
        self.assertEqual(r.status, 200, (r, j))
        return j["properties"]

    def assert_alive(self, ident):
        p = self.run_cell(ident, "open('marker.txt').read() + str(6 * 7)")
        self.assertEqual(p["status"], "Success", p)
        self.assertEqual(p["result"], "m42")

    def errno_probe(self, ident, code):
        self.run_cell(ident, "open('marker.txt', 'w').write('m')")
        p = self.run_cell(ident, code)
        self.assertEqual(p["status"], "Success", p)
        self.assertEqual(json.loads(p["result"]), [], "calls that did not fail the Linux way")
        self.assert_alive(ident)

    def test_bad_pointers(self):
        self.errno_probe("probe-ptr", POINTER_PROBES % {"ptrs": BAD_POINTERS})

    def test_huge_lengths(self):
        self.errno_probe("probe-len", HUGE_LENGTH_PROBES)

    def test_raw_syscall_numbers(self):
        self.errno_probe("probe-nr", RAW_NUMBER_PROBES)

    def test_no_way_out_of_the_guest(self):
        p = self.run_cell("probe-esc", ESCAPE_PROBES)
        self.assertEqual(p["status"], "Success", p)
        res = json.loads(p["result"])
        self.assertEqual([k for k, v in res["opens"].items() if v == "opened"], [], res)
        self.assertEqual(res["kvm_fds"], [], res)

    def test_crashing_probes_end_the_guest_not_the_vmm(self):
        for i, (name, (code, signals)) in enumerate(CRASH_PROBES.items()):
            with self.subTest(name):
                ident = "probe-crash-%d" % i
                self.run_cell(ident, "open('marker.txt', 'w').write('m')\nv = 1")
                p = self.run_cell(ident, PRELUDE + code)
                self.assertEqual(p["status"], "Failure", p)
                self.assertEqual(p.get("errorCode"), "InterpreterCrashed", p)
                self.assertIn("variables were lost", p["stderr"])
                sigs = [s for s in signals if "signal %d)" % s in p["stderr"]]
                self.assertTrue(sigs, "want one of signals %s: %s" % (signals, p["stderr"][-300:]))
                self.assert_alive(ident)
                p = self.run_cell(ident, "'v' in globals()")
                self.assertEqual(p["result"], False)

    def test_native_loop_is_stopped_by_the_host(self):
        # A loop without syscalls never sees the SIGINT: the VMM kills the guest after the grace
        # period and the session gets a fresh clone (ExecutionTimeout, variables lost, files kept).
        self.run_cell("probe-loop", "open('marker.txt', 'w').write('m')\nv = 1")
        body = {"properties": {"codeInputType": "inline", "executionType": "synchronous", "timeoutInSeconds": 1,
                               "code": PRELUDE + "m, a = machine_code(b'\\xeb\\xfe')\nctypes.CFUNCTYPE(None)(a)()"}}
        r, j = self.srv.json("POST", "/code/execute?identifier=probe-loop", body)
        p = j["properties"]
        self.assertEqual(p.get("errorCode"), "ExecutionTimeout", p)
        self.assertIn("variables were lost", p["stderr"])
        self.assert_alive("probe-loop")

    def template_children(self):
        """(session VMMs, spares) of this server's template: [(pid, status)] each. A spare is the VMM
        child forked ahead (still in the template's cgroup, waiting for its request)."""
        vmms, spares = [], []
        for pid in os.listdir("/proc"):
            if not pid.isdigit():
                continue
            try:
                with open("/proc/%s/cmdline" % pid, "rb") as f:
                    cmd = f.read().split(b"\0")
                status = proc_status(pid)
                if len(cmd) <= 1 or cmd[1] != b"vmm-template" or int(status["PPid"]) == self.srv.proc.pid:
                    continue
                ppid = status["PPid"].strip()
                with open("/proc/%s/stat" % ppid) as f:
                    grand = int(f.read().rsplit(")", 1)[1].split()[1])
                if grand != self.srv.proc.pid:
                    continue
                with open("/proc/%s/cgroup" % pid) as f:
                    own = f.read()
                with open("/proc/%s/cgroup" % ppid) as f:
                    template = f.read()
            except OSError:
                continue
            (spares if own == template else vmms).append((pid, status))
        return vmms, spares

    def settled_status(self, pid, st):
        """A VMM child a refill is still isolating (it joins its cgroup first, loads the lock on
        its seccomp filter last) gets up to 5 s to finish; a child that stays unconfined fails the
        checks. None when the process is gone."""
        deadline = time.monotonic() + 5
        while True:
            try:
                if st["Seccomp_filters"].strip() == "2" and len(self.threads(pid)) == 2 or time.monotonic() > deadline:
                    return st
                time.sleep(0.05)
                st = proc_status(pid)
            except OSError:
                return None

    def threads(self, pid):
        return list(self.thread_status(pid))

    def thread_status(self, pid):
        """{tid: status} of the process's threads, without the kvm-nx-lpage-recovery worker the
        kernel adds per VM (a kernel thread that never runs user code)."""
        out = {}
        for t in os.listdir("/proc/%s/task" % pid):
            st = proc_status("%s/task/%s" % (pid, t))
            if not st["Name"].strip().startswith("kvm-"):
                out[t] = st
        return out

    def assert_thread_confined(self, pid, tid, st, uid=None):
        """One thread of a VMM child: seccomp (two filters: the VMM policy with the calls of the
        isolation's last steps, loaded ahead, and the lock refusing those), no_new_privs, no
        capabilities at all, an unprivileged uid (`uid`, or a sandbox's: ≥ 100000)."""
        what = (pid, tid, st["Name"])
        self.assertEqual(st["Seccomp"].strip(), "2", what)
        self.assertEqual(st["Seccomp_filters"].strip(), "2", what)
        self.assertEqual(st["NoNewPrivs"].strip(), "1", what)
        for caps in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"):
            self.assertEqual(int(st[caps], 16), 0, (what, caps))
        uids = [int(u) for u in st["Uid"].split()]
        gids = [int(g) for g in st["Gid"].split()]
        if uid is None:
            self.assertGreaterEqual(uids[0], 100000, what)
        self.assertEqual(set(uids), {uid if uid is not None else uids[0]}, what)
        self.assertNotIn(0, gids, what)
        self.assertEqual(st["Groups"].strip(), "", what)

    def test_vmm_processes_are_confined(self):
        self.run_cell("probe-conf", "1")
        vmms, spares = self.template_children()
        self.assertGreaterEqual(len(vmms), 2, "no VMM process of this server found")
        for pid, st in vmms:
            st = self.settled_status(pid, st)
            if st is None:
                continue  # it ended meanwhile (a refill's clone that failed, a teardown)
            threads = self.thread_status(pid)
            # vCPU + deadline watcher. The vCPU thread has the sandbox's uid; the watcher, started
            # before the request, sandpool's watcher user's (pool_template.cc, drop_own_ids).
            self.assertEqual(len(threads), 2, (pid, threads.keys()))
            main = threads.pop(pid)
            self.assert_thread_confined(pid, pid, main)
            for tid, tst in threads.items():
                self.assert_thread_confined(pid, tid, tst, uid=WATCHER_UID)
        # The spare has cloned its VM, run its guest ahead (the template's agent code, up to its
        # pause before the session) and started its watcher thread as the watcher user, without
        # capabilities. While it waits for its request: those two threads (and KVM's own worker). A
        # refill's child that took its request but has not joined its cgroup yet still looks like
        # one (seen under load: 3 at once; since the guest runs ahead, also a child handed a request
        # while it was still running ahead): give them up to 5 s to move on.
        deadline = time.monotonic() + 5
        while len(spares) > 1 and time.monotonic() < deadline:
            time.sleep(0.05)
            spares = self.template_children()[1]
        self.assertLessEqual(len(spares), 1, spares)
        for pid, st in spares:
            # Right after it was forked it may still be cloning its VM or running its guest ahead:
            # give it up to 5 s to reach its wait for a request, or to take one (it then leaves the
            # template's cgroup for its sandbox's).
            deadline = time.monotonic() + 5
            with open("/proc/%s/cgroup" % st["PPid"].strip()) as f:
                cgroup = f.read()  # the template's
            moved = gone = False
            while True:
                try:
                    st = proc_status(pid)
                    threads = self.threads(pid)
                    with open("/proc/%s/cgroup" % pid) as f:
                        moved = f.read() != cgroup
                except OSError:
                    gone = True
                    break  # it ended
                if moved or (st["State"].split()[0] == "S" and len(threads) == 2):
                    break
                if time.monotonic() > deadline:
                    self.assertEqual(len(threads), 2, (pid, threads, st["State"]))
                    self.assertEqual(st["State"].split()[0], "S", pid)
                    break
                time.sleep(0.05)
            if not moved and not gone:
                try:
                    waiting = self.thread_status(pid)
                except OSError:
                    waiting = {}  # it ended meanwhile
                for tid, tst in waiting.items():
                    if tid != pid:  # the watcher, before any request: no privilege either
                        uids = {int(u) for u in tst["Uid"].split()}
                        self.assertEqual(uids, {WATCHER_UID}, (pid, tid))
                        for caps in ("CapPrm", "CapEff", "CapAmb"):
                            self.assertEqual(int(tst[caps], 16), 0, (pid, tid, caps))

    def test_a_dead_spare_is_replaced(self):
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            spares = self.template_children()[1]
            if spares:
                break
            time.sleep(0.05)
        self.assertTrue(spares, "no spare VMM child found")
        os.kill(int(spares[0][0]), signal.SIGKILL)
        for i in range(4):  # beyond the ready sandboxes: the template forks a new spare once the killed one's socket ends
            p = self.run_cell("probe-spare-%d" % i, "6 * 7")
            self.assertEqual(p["result"], 42, p)

if __name__ == "__main__":
    harness.BINARY = os.path.abspath(sys.argv.pop(1))
    try:
        with open("/dev/kvm", "rb"):
            pass
    except OSError as e:
        print("SKIP: microvm pools need /dev/kvm: %s" % e)
        sys.exit(SKIP)
    unittest.main(verbosity=2)
