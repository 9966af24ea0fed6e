"""Behaviour tests of the Python agent over a socketpair (stdlib unittest, run with
Debian's /usr/bin/python3 by meson). Every agent here is a real subprocess."""

import base64
import errno
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from agent_client import A, Agent, b  # noqa: E402

HAVE_MPL = subprocess.run(["/usr/bin/python3", "-c", "import matplotlib"],
                          capture_output=True).returncode == 0
HAVE_NUMPY = subprocess.run(["/usr/bin/python3", "-c", "import numpy"], capture_output=True).returncode == 0


class AgentCase(unittest.TestCase):
    def setUp(self):
        self.root = tempfile.mkdtemp(prefix="sandpool-agent-test-")
        self.agent = Agent(self.root, grace_ms=400)

    def tearDown(self):
        self.assertEqual(self.agent.close(), 0)
        shutil.rmtree(self.root, ignore_errors=True)

    def ok(self, code, **kw):
        r = self.agent.execute(code, **kw)
        self.assertEqual(r.status, A.S_SUCCESS, r.stderr.decode())
        return r


class ExecuteTest(AgentCase):
    def test_hello(self):
        h = self.agent.hellos[0]
        self.assertEqual(h.python.split(".")[:2], ["3", "11"])
        self.assertEqual(h.restarts, 0)
        self.assertEqual(h.reason, A.R_INITIAL)
        self.assertTrue(h.caps & A.CAP_SHELL)

    def test_worker_is_the_oom_killers_first_choice(self):
        self.assertEqual(self.ok("open('/proc/self/oom_score_adj').read().strip()").result,
                         '"1000"')

    def test_globals_persist_and_cwd_is_root(self):
        self.ok("x = 41")
        self.assertEqual(self.ok("x + 1").result, "42")
        self.assertEqual(self.ok("import os; os.getcwd()").result,
                         '"%s"' % os.path.realpath(self.root))
        self.ok("def f(): return x * 2")
        self.assertEqual(self.ok("f()").result, "82")

    def test_fd_level_capture_in_order(self):
        r = self.ok("import os\nprint('a')\nos.write(1, b'b\\n')\nprint('c')\n"
                    "os.write(2, b'E1\\n')\nimport sys; print('E2', file=sys.stderr)")
        self.assertEqual(r.stdout, b"a\nb\nc\n")
        self.assertEqual(r.stderr, b"E1\nE2\n")

    def test_order_is_kept_within_a_line(self):
        r = self.ok("import os, sys\nprint('a', end='')\nos.write(1, b'b')\nprint('c')\n"
                    "sys.stderr.write('x')\nos.write(2, b'y')\nsys.stderr.write('z')")
        self.assertEqual((r.stdout, r.stderr), (b"abc\n", b"xyz"))

    def test_c_library_and_subprocess_output(self):
        r = self.ok("import ctypes\nlibc = ctypes.CDLL(None)\nprint('py1')\n"
                    "libc.printf(b'from C %d\\n', 7)\nlibc.fflush(None)\nprint('py2')")
        self.assertEqual(r.stdout, b"py1\nfrom C 7\npy2\n")
        # printf without fflush: the agent flushes C stdio after the cell.
        r = self.ok("libc.printf(b'late\\n')")
        self.assertEqual(r.stdout, b"late\n")
        r = self.ok("import subprocess\nprint('before')\n"
                    "subprocess.run(['sh', '-c', 'echo child; echo cerr >&2'])\nprint('after')")
        self.assertEqual(r.stdout, b"before\nchild\nafter\n")
        self.assertEqual(r.stderr, b"cerr\n")

    def test_last_expression_values(self):
        cases = [("1 + 1", "2"), ("2.5", "2.5"), ("'hi\"'", '"hi\\""'), ("True", "true"),
                 ("False", "false"), ("None", "null"), ("[1, 'a']", "\"[1, 'a']\""),
                 ("x = 3", '""'), ("float('nan')", '"nan"'), ("float('inf')", '"inf"'),
                 ("-float('inf')", '"-inf"'), ("{'k': 1}", "\"{'k': 1}\""),
                 ("10**30", "1000000000000000000000000000000"),
                 ("print('p')", "null"), ("if True:\n    y = 1", '""'), ("", '""')]
        for code, want in cases:
            with self.subTest(code=code):
                self.assertEqual(self.ok(code).result, want)

    def test_hostile_repr(self):
        r = self.ok("class B:\n    def __repr__(self): raise RuntimeError('no')\nB()")
        self.assertIn("repr failed", r.result)

    def test_one_line_expressions_and_other_cells_give_the_same_results(self):
        # One-line cells try the expression-only compile first (Worker.compile_cell).
        for code, result in (("6 * 7", "42"), ("6 * 7  # c\n\n", "42"), ("(6 *\n 7)", "42"),
                             ("6 * 7;", "42"), ("x = 6 * 7", '""'), ("x; y = x", '""'), ("y", "42"),
                             ("", '""'), ("# only a comment", '""'), ("'s'", '"s"')):
            self.assertEqual(self.ok(code).result, result, repr(code))
        r = self.agent.execute("[1][5]")
        self.assertEqual(r.status, A.S_FAILURE)
        self.assertIn("[1][5]", r.stderr.decode())  # the line is shown
        r = self.agent.execute("  1")
        self.assertIn(b"IndentationError", r.stderr)

    def test_exception_is_failure_with_traceback(self):
        r = self.agent.execute("x = 1\ndef g():\n    return 1 / 0\ng()")
        self.assertEqual(r.status, A.S_FAILURE)
        self.assertEqual(r.result, '""')
        err = r.stderr.decode()
        self.assertIn("Traceback", err)
        self.assertIn("ZeroDivisionError", err)
        self.assertIn("return 1 / 0", err)  # the cell's source is shown
        self.assertNotIn("sandpool_agent.py", err)
        self.assertEqual(self.ok("x").result, "1")

    def test_syntax_error_and_system_exit(self):
        r = self.agent.execute("def (:")
        self.assertEqual(r.status, A.S_FAILURE)
        self.assertIn(b"SyntaxError", r.stderr)
        r = self.agent.execute("import sys; sys.exit(3)")
        self.assertEqual(r.status, A.S_FAILURE)
        self.assertIn(b"SystemExit", r.stderr)
        self.ok("1")  # the interpreter is still there

    def test_truncation(self):
        r = self.ok("print('x' * 10000)\nimport sys; sys.stderr.write('y' * 5000)", limit=100)
        self.assertEqual(r.stdout, b"x" * 100)
        self.assertEqual(r.stderr, b"y" * 100)
        self.assertEqual(r.flags & (A.F_STDOUT_TRUNC | A.F_STDERR_TRUNC),
                         A.F_STDOUT_TRUNC | A.F_STDERR_TRUNC)
        r = self.ok("print('é' * 100)", limit=5)  # never cut inside a character
        self.assertEqual(r.stdout, "éé".encode())
        self.assertEqual(self.ok("print('z')", limit=100).flags, 0)

    def test_huge_results_and_output_stay_inside_one_frame(self):
        r = self.ok("'a' * (1 << 20)")
        self.assertEqual(len(r.result), A.MAX_RESULT_CHARS + 2)
        self.assertTrue(r.flags & A.F_RESULT_TRUNC)
        r = self.ok("list(range(300000))")
        self.assertTrue(r.flags & A.F_RESULT_TRUNC)
        r = self.ok("import os\nos.write(1, b'o' * (9 << 20))", limit=0)
        self.assertEqual(len(r.stdout), A.MAX_OUTPUT_BYTES)
        self.assertTrue(r.flags & A.F_STDOUT_TRUNC)
        self.assertEqual(self.ok("print('next')").stdout, b"next\n")

    def test_ping_when_idle(self):
        self.assertEqual(self.agent.call(A.T_PING).type, A.T_PONG)

    def test_forked_child_never_answers(self):
        r = self.ok("import os\npid = os.fork()\nif pid == 0:\n    print('child')\n"
                    "else:\n    os.waitpid(pid, 0)\n    print('parent')")
        self.assertEqual(r.stdout, b"child\nparent\n")
        self.assertEqual(self.ok("1 + 1").result, "2")

    def test_orphans_are_reaped_by_the_supervisor(self):
        # A daemonized grandchild outlives its parent: it is re-parented to the
        # supervisor (pid 1 in a sandbox, a subreaper here), which must reap it.
        r = self.ok("import subprocess\nsubprocess.run(['sh', '-c', 'sleep 0.2 &'])\n"
                    "open('/proc/self/status').read().split('PPid:')[1].split()[0]")
        sup = self.agent.proc.pid
        self.assertEqual(r.result, f'"{sup}"')
        import time
        deadline = time.monotonic() + 10
        while True:
            with open(f"/proc/{sup}/task/{sup}/children") as f:
                kids = f.read().split()
            states = []
            for k in kids:
                try:
                    with open(f"/proc/{k}/stat") as f:
                        states.append(f.read().rsplit(")", 1)[1].split()[0])
                except FileNotFoundError:
                    pass
            if kids == [str(self.agent.hellos[-1].pid)]:
                break  # only the worker is left: the orphan was reaped
            self.assertLess(time.monotonic(), deadline, f"children {kids} states {states}")
            time.sleep(0.05)

    def test_numpy_values(self):
        try:
            import numpy  # noqa: F401  (the agent runs the same interpreter)
        except ImportError:
            self.skipTest("numpy missing")
        self.ok("import numpy as np")
        for code, want in [("np.int64(5)", "5"), ("np.float64('nan')", '"nan"'),
                           ("np.float32(1.5)", "1.5"), ("np.bool_(True)", "true"),
                           ("np.arange(3)", '"array([0, 1, 2])"')]:
            with self.subTest(code=code):
                self.assertEqual(self.ok(code).result, want)

    def test_input_does_not_block(self):
        r = self.agent.execute("input()")
        self.assertEqual(r.status, A.S_FAILURE)
        self.assertIn(b"EOFError", r.stderr)

    @unittest.skipUnless(HAVE_MPL, "matplotlib missing")
    def test_figure_becomes_png_image(self):
        r = self.ok("import matplotlib.pyplot as plt\nplt.plot([1, 2, 3])\n"
                    "plt.figure()\nplt.bar([1], [2])\n42")
        import json
        img = json.loads(r.result)
        self.assertEqual((img["type"], img["format"]), ("image", "png"))
        self.assertTrue(base64.b64decode(img["base64_data"]).startswith(b"\x89PNG\r\n\x1a\n"))
        self.assertEqual(self.ok("len(plt.get_fignums())").result, "0")  # closed after
        r = self.ok("plt.plot([3, 1]); plt.show()")
        self.assertIn('"image"', r.result)
        # Shown, then closed within the cell: still returned.
        r = self.ok("plt.plot([1, 5]); plt.show(); plt.close('all')")
        self.assertIn('"image"', r.result)
        self.assertEqual(self.ok("1").result, "1")  # nothing left over for the next cell


class TimeoutTest(AgentCase):
    def test_interruptible_sleep_keeps_variables(self):
        self.ok("keep = 'yes'")
        r = self.agent.execute("import time\nprint('started')\ntime.sleep(30)", timeout_ms=300)
        self.assertEqual(r.status, A.S_TIMEOUT)
        self.assertIn(b"KeyboardInterrupt", r.stderr)
        self.assertEqual(r.stdout, b"started\n")
        self.assertFalse(r.flags & A.F_VARS_LOST)
        self.assertEqual(self.ok("keep").result, '"yes"')

    def test_busy_python_loop_is_interrupted(self):
        r = self.agent.execute("while True:\n    pass", timeout_ms=300)
        self.assertEqual(r.status, A.S_TIMEOUT)
        self.assertFalse(r.flags & A.F_VARS_LOST)

    def test_deadlines_at_cell_boundaries_never_kill_the_worker(self):
        # Timeouts close to the cell's run time: SIGINT lands just before, during or just
        # after the cell. Every reply must be well formed and no restart may happen.
        import random
        rnd = random.Random(5)
        seen = set()
        for i in range(100):
            d = rnd.choice([0.005, 0.01, 0.02])
            r = self.agent.execute(f"import time\nx = {i}\ntime.sleep({d})\nx",
                                   timeout_ms=rnd.choice([5, 10, 20, 30]))
            seen.add(r.status)
            self.assertIn(r.status, (A.S_SUCCESS, A.S_TIMEOUT))
            if r.status == A.S_SUCCESS:
                self.assertEqual(r.result, str(i))
        self.assertEqual(len(self.agent.hellos), 1)
        self.assertEqual(seen, {A.S_SUCCESS, A.S_TIMEOUT})

    def test_hung_c_loop_restarts_interpreter(self):
        self.ok("lost = 1\nopen('kept.txt', 'w').write('file survives')")
        # sum() over itertools.repeat never returns to the eval loop: SIGINT is ignored.
        r = self.agent.execute("import itertools\nprint('going')\n"
                               "sum(itertools.repeat(1, 10**15))", timeout_ms=300)
        self.assertEqual(r.status, A.S_TIMEOUT)
        self.assertTrue(r.flags & A.F_VARS_LOST)
        self.assertEqual(r.stdout, b"going\n")
        self.assertIn(b"variables were lost", r.stderr)
        r = self.agent.execute("lost")
        self.assertEqual(r.status, A.S_FAILURE)
        self.assertIn(b"NameError", r.stderr)
        self.assertEqual(self.agent.hellos[-1].restarts, 1)
        self.assertEqual(self.agent.hellos[-1].reason, A.R_TIMEOUT)
        self.assertEqual(self.ok("open('kept.txt').read()").result, '"file survives"')

    def test_code_that_swallows_interrupts_is_killed(self):
        r = self.agent.execute("import time\nwhile True:\n    try:\n        time.sleep(1)\n"
                               "    except KeyboardInterrupt:\n        pass", timeout_ms=200)
        self.assertEqual(r.status, A.S_TIMEOUT)
        self.assertTrue(r.flags & A.F_VARS_LOST)

    def test_crash_and_kill_are_reported(self):
        r = self.agent.execute("import os, signal\nos.kill(os.getpid(), signal.SIGSEGV)")
        self.assertEqual(r.status, A.S_CRASHED)
        self.assertTrue(r.flags & A.F_VARS_LOST)
        self.assertEqual(r.exit_code, -11)
        r = self.agent.execute("import os\nos._exit(7)")
        self.assertEqual(r.status, A.S_CRASHED)
        self.assertEqual(r.exit_code, 7)
        for code in (0, 3):  # the supervisor's own exit codes mean nothing inside a cell
            r = self.agent.execute(f"import os\nprint('bye')\nos._exit({code})")
            self.assertEqual((r.status, r.exit_code, r.stdout), (A.S_CRASHED, code, b"bye\n"))
        r = self.agent.execute("import os, signal\nos.kill(os.getpid(), signal.SIGKILL)")
        self.assertEqual(r.status, A.S_OOM)  # an outside SIGKILL is what the OOM killer sends
        self.assertEqual(self.ok("2 * 21").result, "42")
        self.assertEqual(self.agent.hellos[-1].reason, A.R_OOM)
        self.assertEqual(self.agent.hellos[-1].restarts, 5)

    def test_a_cell_that_rewrites_the_shared_page_cannot_inflate_the_dead_cells_answer(self):
        # The page the worker shares with the supervisor is writable by the cell's own code: a
        # huge output limit there must not make the supervisor read and send everything the
        # capture file holds (10 MiB here: past one frame, the supervisor used to give up).
        code = ("import ctypes, os, sys\n"
                "page = [l for l in open('/proc/self/maps') if ' rw-s ' in l and '/dev/zero' in l][0]\n"
                "addr = int(page.split('-')[0], 16)\n"
                "ctypes.c_uint64.from_address(addr + %d).value = 1 << 62\n"  # the output limit
                "sys.stdout.write('x' * (10 << 20))\n"
                "os._exit(1)") % A.OUTPUT_OFFSET
        r = self.agent.execute(code, limit=1 << 20)
        self.assertEqual(r.status, A.S_CRASHED)
        self.assertTrue(r.flags & A.F_STDOUT_TRUNC)
        self.assertEqual(len(r.stdout), 1 << 20)
        self.assertEqual(self.ok("2 * 21").result, "42")

    def test_signal_handlers_are_restored_between_cells(self):
        self.ok("import signal\nsignal.signal(signal.SIGINT, signal.SIG_IGN)\nmine = 1")
        r = self.agent.execute("import time\ntime.sleep(30)", timeout_ms=300)
        self.assertEqual(r.status, A.S_TIMEOUT)
        self.assertFalse(r.flags & A.F_VARS_LOST)
        self.assertEqual(self.ok("mine").result, "1")

    def test_cell_closing_the_agent_socket_still_gets_an_answer(self):
        r = self.agent.execute(
            "import os\nfor fd in os.listdir('/proc/self/fd'):\n"
            "    try:\n        link = os.readlink(f'/proc/self/fd/{fd}')\n"
            "    except OSError:\n        continue\n"
            "    if link.startswith('socket:'):\n        os.close(int(fd))\nprint('closed')")
        self.assertEqual(r.status, A.S_CRASHED)
        self.assertTrue(r.flags & A.F_VARS_LOST)
        self.assertEqual(r.stdout, b"closed\n")
        self.assertEqual(self.ok("3").result, "3")

    def test_host_interrupt_and_ping_during_a_cell(self):
        rid = self.agent.execute("import time\ntime.sleep(30)", wait=False)
        pong = self.agent.call(A.T_PING)
        self.assertEqual(pong.type, A.T_PONG)
        self.agent.send(A.T_INTERRUPT)
        r = self.agent.wait(rid)
        self.assertEqual(r.status, A.S_INTERRUPTED)
        self.assertEqual(self.ok("5").result, "5")


class ShellTest(AgentCase):
    def test_bash_exit_code_and_streams(self):
        r = self.agent.execute("echo out; echo err >&2; exit 3", shell=True)
        self.assertEqual((r.status, r.exit_code), (A.S_FAILURE, 3))
        self.assertEqual((r.stdout, r.stderr), (b"out\n", b"err\n"))
        r = self.agent.execute("pwd", shell=True)
        self.assertEqual(r.stdout.decode().strip(), os.path.realpath(self.root))

    def test_argv_with_stdin(self):
        r = self.agent.execute("", shell=True, argv=["tr", "a-z", "A-Z"], stdin=b"hello")
        self.assertEqual((r.status, r.exit_code, r.stdout), (A.S_SUCCESS, 0, b"HELLO"))
        r = self.agent.execute("", shell=True, argv=["/nonexistent/tool"])
        self.assertEqual((r.status, r.exit_code), (A.S_FAILURE, 127))

    def test_shell_timeout(self):
        r = self.agent.execute("echo a; sleep 30", shell=True, timeout_ms=300)
        self.assertEqual(r.status, A.S_TIMEOUT)
        self.assertEqual(r.stdout, b"a\n")


class RequestDecodingTest(unittest.TestCase):
    """Execute requests without argv and stdin take a shorter decoding path than the others: both
    must read the same fields, and refuse the same malformed requests."""

    def setUp(self):
        self.root = tempfile.mkdtemp(prefix="sandpool-agent-test-")
        self.agent = Agent(self.root, grace_ms=400)

    def tearDown(self):
        self.agent.close()
        shutil.rmtree(self.root, ignore_errors=True)

    def test_code_ending_in_zero_bytes_is_read_whole(self):
        r = self.agent.execute(b"'cut'  #" + bytes(8))  # only the zeros make it fail
        self.assertEqual(r.status, A.S_FAILURE)
        self.assertIn(b"null bytes", r.stderr)
        self.assertEqual(self.agent.execute("6 * 7").result, "42")

    def test_warm_up_execute_leaves_no_compiled_code(self):
        # The host's warm-up (F_WARM_UP) runs like any cell, but the agent forgets it: a session's
        # first cell with the same text is compiled anew, as its cell 1, with its source kept for
        # the traceback (a cache hit would skip both, and the warm-up's source is gone).
        r = self.agent.execute("print(2)\n1 / 0", warm_up=True)
        self.assertEqual((r.status, r.stdout), (A.S_FAILURE, b"2\n"))
        self.assertIn('File "<cell-1>", line 2', r.stderr.decode())
        for _ in range(2):  # compiled, then from the cache
            r = self.agent.execute("print(2)\n1 / 0")
            self.assertIn('File "<cell-1>", line 2, in <module>\n    1 / 0', r.stderr.decode())
        r = self.agent.execute("print(3)")
        self.assertEqual(self.agent.execute("__import__('sys')._getframe().f_code.co_filename").result,
                         '"<cell-3>"')

    def test_warm_up_flag_on_another_frame_is_a_protocol_error(self):
        self.agent.send(A.T_PING, b"", A.F_WARM_UP)
        self.assertEqual(self.agent.proc.wait(timeout=10), A.EXIT_PROTOCOL)

    def test_bytes_after_stdin_are_a_protocol_error(self):
        self.agent.send(A.T_EXEC, struct.pack("<BII", 0, 10000, 65536) + b(b"1") +
                        struct.pack("<I", 0) + b(b"") + bytes(1))
        self.assertEqual(self.agent.proc.wait(timeout=10), A.EXIT_PROTOCOL)


class FileTest(AgentCase):
    def test_upload_read_stat_list_delete(self):
        data = os.urandom(3 * A.CHUNK + 123)
        chunks = [data[i:i + A.CHUNK] for i in range(0, len(data), A.CHUNK)]
        r = self.agent.upload("/mnt/data/dir/sub/blob.bin", chunks)
        self.assertEqual((r.type, r.value), (A.T_OK, len(data)))
        got, off = b"", 0
        while True:
            r = self.agent.read_file("dir/sub/blob.bin", off)
            self.assertEqual(r.type, A.T_FILE_DATA)
            got += r.data
            off += len(r.data)
            if r.eof:
                break
        self.assertEqual(got, data)
        r = self.agent.path_op(A.T_STAT, "dir/sub/blob.bin")
        self.assertEqual(r.entries, [("dir/sub/blob.bin", 1, len(data))])
        self.agent.upload("top.csv", [b"a,b\n1,2\n"])
        r = self.agent.path_op(A.T_LIST, "")
        self.assertEqual(sorted(e[0] for e in r.entries), ["dir", "top.csv"])
        r = self.agent.path_op(A.T_LIST, "/mnt/data", recursive=1)
        self.assertEqual(sorted(e[0] for e in r.entries),
                         ["dir", "dir/sub", "dir/sub/blob.bin", "top.csv"])
        self.assertEqual(self.agent.path_op(A.T_DELETE, "dir").type, A.T_OK)
        self.assertFalse(os.path.exists(os.path.join(self.root, "dir")))
        r = self.agent.path_op(A.T_STAT, "dir")
        self.assertEqual((r.type, r.errno), (A.T_ERROR, errno.ENOENT))
        # Files written by code are visible to file operations and vice versa.
        self.ok("open('from_code.txt', 'w').write('hi')")
        self.assertEqual(self.agent.read_file("from_code.txt").data, b"hi")

    def test_128_mib_upload_is_streamed(self):
        def peak_kib():
            pid = self.agent.hellos[-1].pid
            with open(f"/proc/{pid}/status") as f:
                for line in f:
                    if line.startswith("VmHWM:"):
                        return int(line.split()[1])
        before = peak_kib()
        chunk = bytes(range(256)) * (A.CHUNK // 256)
        r = self.agent.upload("big/upload.bin", [chunk] * 512)  # 128 MiB
        self.assertEqual((r.type, r.value), (A.T_OK, 128 << 20))
        self.assertEqual(os.path.getsize(os.path.join(self.root, "big/upload.bin")), 128 << 20)
        self.assertLess(peak_kib() - before, 16 << 10)  # never held whole: < 16 MiB growth
        r = self.agent.read_file("big/upload.bin", offset=(128 << 20) - 256)
        self.assertEqual((r.data, r.eof), (bytes(range(256)), 1))

    def test_hostile_names(self):
        for name, code in [("../x", errno.EINVAL), ("a/../../x", errno.EINVAL),
                           ("/etc/passwd", errno.EINVAL), ("a\0b", errno.EINVAL),
                           ("x" * 256, errno.ENAMETOOLONG), ("/mnt/data/../etc", errno.EINVAL)]:
            with self.subTest(name=name):
                r = self.agent.read_file(name)
                self.assertEqual((r.type, r.errno), (A.T_ERROR, code))
                r = self.agent.upload(name, [b"x"])
                self.assertEqual((r.type, r.errno), (A.T_ERROR, code))
        self.assertEqual(self.agent.upload("x" * 255, [b"ok"]).type, A.T_OK)
        self.assertEqual(self.agent.path_op(A.T_DELETE, "").type, A.T_ERROR)

    def test_symlinks_are_never_followed(self):
        outside = tempfile.mkdtemp(prefix="sandpool-outside-")
        try:
            with open(os.path.join(outside, "secret"), "w") as f:
                f.write("secret")
            self.ok(f"import os\nos.symlink({outside!r}, 'out')\n"
                    f"os.symlink({outside + '/secret'!r}, 'sec')")
            for name in ("out/secret", "sec"):
                with self.subTest(name=name):
                    r = self.agent.read_file(name)
                    self.assertEqual(r.type, A.T_ERROR)
                    self.assertIn(r.errno, (errno.ELOOP, errno.ENOTDIR))
            r = self.agent.upload("out/new", [b"x"])
            self.assertEqual(r.type, A.T_ERROR)
            self.assertEqual(self.agent.path_op(A.T_LIST, "out").type, A.T_ERROR)
            self.assertEqual(self.agent.path_op(A.T_DELETE, "out/secret").type, A.T_ERROR)
            # Uploading over the link replaces the link, not the file it points to.
            self.assertEqual(self.agent.upload("sec", [b"mine"]).type, A.T_OK)
            with open(os.path.join(outside, "secret")) as f:
                self.assertEqual(f.read(), "secret")
            r = self.agent.path_op(A.T_LIST, "", recursive=1)
            self.assertIn(("out", 3, 0), r.entries)  # listed as a link, not descended
            self.assertEqual(self.agent.path_op(A.T_DELETE, "out").type, A.T_OK)
            self.assertTrue(os.path.exists(os.path.join(outside, "secret")))
            self.assertEqual(os.listdir(outside), ["secret"])
        finally:
            shutil.rmtree(outside)

    def test_abort_and_unknown_upload(self):
        r = self.agent.call(A.T_WRITE_OPEN, b(b"half.bin") + b"\1")
        up = r.value
        self.agent.call(A.T_WRITE_CHUNK, struct.pack("<Q", up) + b(b"abc"))
        self.assertEqual(self.agent.call(A.T_WRITE_ABORT, struct.pack("<Q", up)).type, A.T_OK)
        self.assertEqual(os.listdir(self.root), [])
        r = self.agent.call(A.T_WRITE_CHUNK, struct.pack("<Q", 999) + b(b"abc"))
        self.assertEqual((r.type, r.errno), (A.T_ERROR, errno.EBADF))

    def test_reseed(self):
        seeded = self.ok("import random\nrandom.seed(1)\nrandom.random()").result
        self.ok("random.seed(1)")
        self.assertEqual(self.agent.call(A.T_RESEED).type, A.T_OK)
        self.assertNotEqual(self.ok("random.random()").result, seeded)

    @unittest.skipUnless(HAVE_NUMPY, "numpy is not installed")
    def test_reseed_numpy(self):
        # numpy's global generator gets its whole state from the kernel (sandpool_agent.reseed).
        seeded = self.ok("import numpy\nnumpy.random.seed(1)\nint(numpy.random.randint(1 << 62))").result
        self.ok("numpy.random.seed(1)")
        self.assertEqual(self.agent.call(A.T_RESEED).type, A.T_OK)
        after = [self.ok("int(numpy.random.randint(1 << 62))").result for _ in range(2)]
        self.assertNotIn(seeded, after)
        self.assertNotEqual(after[0], after[1])
        self.assertEqual(self.agent.call(A.T_RESEED).type, A.T_OK)
        self.assertNotIn(self.ok("int(numpy.random.randint(1 << 62))").result, after)

    def test_upload_onto_a_directory_fails_at_open(self):
        os.mkdir(os.path.join(self.root, "adir"))
        r = self.agent.call(A.T_WRITE_OPEN, b(b"adir") + b"\1")
        self.assertEqual((r.type, r.errno), (A.T_ERROR, errno.EISDIR))
        r = self.agent.path_op(A.T_LIST, "")
        self.assertEqual(r.entries, [("adir", 2, 0)])

    def test_reserved_upload_name(self):
        r = self.agent.upload(".sandpool-upload-1", [b"x"])
        self.assertEqual((r.type, r.errno), (A.T_ERROR, errno.EINVAL))


class FullDiskTest(unittest.TestCase):
    """ENOSPC on upload, in a 1 MiB tmpfs (needs a mount namespace: skipped without)."""

    def test_enospc(self):
        probe = subprocess.run(["unshare", "-rm", "true"], capture_output=True)
        if probe.returncode != 0:
            self.skipTest("no mount namespace: " + probe.stderr.decode().strip())
        root = tempfile.mkdtemp(prefix="sandpool-full-")
        import agent_client
        real = agent_client.PYTHON
        wrapper = os.path.join(root + ".sh")
        # The tmpfs is mounted inside the agent's own mount namespace only: never on the
        # machine running the tests.
        with open(wrapper, "w") as f:
            f.write("#!/bin/sh\nexec unshare -rm --propagation private sh -c "
                    "'mount -t tmpfs -o size=1m tmpfs \"$0\" && exec \"$@\"' "
                    f"{root} {real} \"$@\"\n")
        os.chmod(wrapper, 0o755)
        agent_client.PYTHON = wrapper
        try:
            agent = Agent(root)
        finally:
            agent_client.PYTHON = real
        try:
            with open("/proc/self/mounts") as f:
                self.assertNotIn(root, f.read())  # not leaked into our namespace
            r = agent.upload("big.bin", [b"z" * A.CHUNK] * 8)
            self.assertEqual((r.type, r.errno), (A.T_ERROR, errno.ENOSPC))
            r = agent.path_op(A.T_LIST, "")
            self.assertEqual(r.entries, [])  # the partial upload was removed
            self.assertEqual(agent.upload("small.bin", [b"fits"]).type, A.T_OK)
        finally:
            self.assertEqual(agent.close(), 0)
            os.unlink(wrapper)
            shutil.rmtree(root, ignore_errors=True)


class OneWritePrintTest(unittest.TestCase):
    """The micro-VM worker's print() (A.one_write_print): the builtin's output, in one write()."""

    def setUp(self):
        import io
        self.r, self.w = os.pipe()
        self.writes = []
        raw = io.FileIO(self.w, "w", closefd=False)
        real_write = raw.write

        def counted(data):
            self.writes.append(bytes(data))
            return real_write(data)
        raw.write = counted
        self.stream = io.TextIOWrapper(raw, encoding="utf-8", write_through=True)
        self.p = A.one_write_print(print, (self.stream,))

    def tearDown(self):
        os.close(self.r)
        os.close(self.w)

    def output(self):
        self.stream.flush()
        return os.read(self.r, 65536)

    def test_plain_values_make_one_write_with_the_builtins_text(self):
        cases = [((1,), {}), (("a", 2.5, None, True), {"sep": "-", "end": "!\n"}), ((), {}),
                 ((1, 2), {"sep": None, "end": None}), (("x",), {"end": ""}), ((float("nan"), -0.0), {})]
        for args, kw in cases:
            self.writes.clear()
            self.p(*args, file=self.stream, **kw)
            got, ours = self.output(), list(self.writes)
            print(*args, file=self.stream, **kw)
            self.assertEqual(got, self.output(), (args, kw))
            self.assertEqual(ours, [got], (args, kw))  # one write()

    def test_anything_else_is_the_builtin(self):
        class Loud:
            def __str__(inner):
                self.stream.write("side ")
                return "loud"
        self.p(1, Loud(), file=self.stream)
        # The builtin writes "1" and " " before it calls str() of the second argument; one write
        # of the joined line would put "side " first.
        self.assertEqual(self.output(), b"1 side loud\n")
        with self.assertRaises(TypeError):
            self.p(1, sep=3, file=self.stream)
        import io
        other = io.StringIO()
        self.p(1, 2, file=other)
        self.assertEqual(other.getvalue(), "1 2\n")

    def test_an_int_too_long_for_str_fails_as_the_builtin_does(self):
        # The builtin writes what comes before the argument, then raises.
        big = 10 ** (sys.get_int_max_str_digits() + 1)
        with self.assertRaises(ValueError):
            self.p("before", big, file=self.stream)
        self.stream.write("|")  # (so that the read below never waits on an empty pipe)
        self.assertEqual(self.output(), b"before |")

    def test_the_file_is_compared_by_identity(self):
        class Sink:
            def __init__(inner):
                inner.text = ""

            def __eq__(inner, other):
                raise AssertionError("__eq__ ran")

            __hash__ = object.__hash__

            def write(inner, text):
                inner.text += text
        sink = Sink()
        self.p(1, 2, file=sink)  # not a capture stream: the builtin, which never compares files
        self.assertEqual(sink.text, "1 2\n")


class WorkerForkTest(unittest.TestCase):
    """The supervisor's fork (sp_agent_fork, src/agent/supervisor.cc): no interpreter at-fork
    callbacks with one thread, os.fork()'s otherwise; no signal handled twice."""

    SCRIPT = r"""
import ctypes, os, sys, threading
fork = ctypes.PyDLL(os.environ["SANDPOOL_AGENT_LIB"]).sp_agent_fork
ran = []
os.register_at_fork(after_in_child=lambda: ran.append(1))
def child_says():
    r, w = os.pipe()
    pid = fork()
    if pid == 0:
        # The child runs Python (and starts a thread) normally, and reports whether the callback ran.
        t = threading.Thread(target=lambda: None)
        t.start()
        t.join()
        os.write(w, b"callbacks=%d pid=%d" % (len(ran), os.getpid()))
        os._exit(0)
    os.close(w)
    out = os.read(r, 100).decode()
    os.close(r)
    _, status = os.waitpid(pid, 0)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, status
    assert out.endswith("pid=%d" % pid), (out, pid)
    return out.split()[0]
print(child_says())
stop = threading.Event()
t = threading.Thread(target=stop.wait)
t.start()
print(child_says())
stop.set()
t.join()
"""

    SIGNALS = r"""
import ctypes, os, signal, subprocess, sys
fork = ctypes.PyDLL(os.environ["SANDPOOL_AGENT_LIB"]).sp_agent_fork
parent = os.getpid()
ran = []
signal.signal(signal.SIGUSR1, lambda *_: ran.append(os.getpid()))
# SIGUSR1 all the time: some arrive while a fork is under way, their handler not yet run.
killer = subprocess.Popen(["/bin/sh", "-c", "while kill -USR1 %d 2>/dev/null; do :; done" % parent])
inherited = 0
for _ in range(300):
    r, w = os.pipe()
    pid = fork()
    if pid == 0:
        x = 0
        for _ in range(2000):  # bytecode: a handler flagged before the fork would run here
            x += 1
        os.write(w, b"1" if any(p != parent for p in ran) else b"0")
        os._exit(0)
    os.close(w)
    inherited += os.read(r, 1) == b"1"
    os.close(r)
    os.waitpid(pid, 0)
killer.kill()
killer.wait()
print(inherited, len(ran) > 0)
"""

    def test_a_signal_handled_by_the_parent_is_not_handled_again_in_the_child(self):
        # Without the signal mask around the raw fork, most children ran the parent's handler
        # (1384 of 1500 in a /tmp run); os.fork() forgets such signals in the child.
        r = subprocess.run(["/usr/bin/python3", "-c", self.SIGNALS], capture_output=True, text=True, timeout=120)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(r.stdout.split(), ["0", "True"], r.stderr)  # none inherited; the parent did get signals

    def test_callbacks_run_only_when_another_thread_exists(self):
        r = subprocess.run(["/usr/bin/python3", "-c", self.SCRIPT], capture_output=True, text=True, timeout=60)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(r.stdout.split(), ["callbacks=0", "callbacks=1"], r.stderr)


if __name__ == "__main__":
    unittest.main()
