"""Integration tests of the code-interpreter session API (shared/API.md) against the real binary,
with real process-tier sandboxes. Exit 77 (skip) when this machine cannot make sandboxes.

Usage: session_test.py PATH_TO_SANDPOOL
"""
import base64
import json
import os
import subprocess
import sys
import threading
import time
import unittest

import harness
from harness import Server


def sandboxes_work():
    try:
        p = subprocess.run([harness.BINARY, "sandbox-run", "--", "/bin/true"], capture_output=True, timeout=60)
    except OSError as e:
        return False, str(e)
    return p.returncode == 0, p.stderr.decode(errors="replace").strip()


def execute(srv, ident, code, path="/code/execute", **extra):
    body = {"properties": {"codeInputType": "inline", "executionType": "synchronous", "code": code}}
    body["properties"].update(extra)
    r, j = srv.json("POST", "%s?identifier=%s" % (path, ident), body)
    return r, j


class SessionApi(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.srv = Server("--pool-ready", "2", pools=True)
        cls.srv.start()

    @classmethod
    def tearDownClass(cls):
        rc = cls.srv.stop()
        cls.srv.proc.stdout.close()
        cls.srv.dir.cleanup()
        assert rc == 0, cls.srv.log()

    def assertAzureError(self, r, status, code):
        self.assertEqual(r.status, status, r)
        body = json.loads(r.body)
        self.assertEqual(body["error"]["code"], code, body)
        self.assertEqual(r.header("x-ms-error-code"), code)

    def session_count(self, pool="default"):
        r, j = self.srv.json("GET", "/pools/%s/listSessions" % pool)
        return len(j["sessions"])

    def test_envelope_b_and_state(self):
        r, j = execute(self.srv, "state-b", "x = 41\nprint('hi')\nx + 1")
        self.assertEqual(r.status, 200)
        p = j["properties"]
        self.assertEqual((j["$id"], p["$id"]), ("1", "2"))
        self.assertEqual(p["status"], "Success")
        self.assertEqual(p["stdout"], "hi\n")
        self.assertEqual(p["stderr"], "")
        self.assertEqual(p["result"], 42)
        self.assertEqual(p["executionResult"], 42)
        self.assertIsInstance(p["executionTimeInMilliseconds"], int)
        r, j = execute(self.srv, "state-b", "x * 2", path="/pools/default/execute")
        self.assertEqual(j["properties"]["result"], 82)

    def test_result_values(self):
        cases = [("'s'", "s"), ("1.5", 1.5), ("True", True), ("None", None), ("float('nan')", "nan"),
                 ("float('inf')", "inf"), ("[1, 2]", "[1, 2]"), ("y = 3", "")]
        for code, want in cases:
            r, j = execute(self.srv, "values-1", code)
            self.assertEqual(j["properties"]["result"], want, code)

    def test_legacy_python_execute(self):
        r, j = self.srv.json("POST", "/python/execute?identifier=legacy-1",
                             {"properties": {"codeInputType": "inline", "executionType": "synchronous",
                                             "pythonCode": "print(2 + 2)\n'done'"}})
        self.assertEqual(r.status, 200)
        self.assertEqual(j, {"result": "done", "stdout": "4\n", "stderr": ""})

    def test_exception_is_failure_with_traceback(self):
        r, j = execute(self.srv, "exc-1", "1/0")
        p = j["properties"]
        self.assertEqual(p["status"], "Failure")
        self.assertIn("ZeroDivisionError", p["stderr"])
        self.assertEqual(p["result"], "")

    def test_figure_is_an_image_result(self):
        r, j = execute(self.srv, "plot-1", "import matplotlib.pyplot as plt\nplt.plot([1, 2, 3])")
        res = j["properties"]["result"]
        self.assertEqual(res["type"], "image")
        self.assertEqual(res["format"], "png")
        self.assertTrue(base64.b64decode(res["base64_data"]).startswith(b"\x89PNG"))

    def test_numpy_pandas_preloaded(self):
        r, j = execute(self.srv, "libs-1", "import numpy, pandas\nint(pandas.Series(numpy.arange(4)).sum())")
        self.assertEqual(j["properties"]["result"], 6)

    def test_executions_sync_async_and_get(self):
        r, j = self.srv.json("POST", "/executions?identifier=exec-c",
                             {"codeInputType": "Inline", "executionType": "Synchronous", "code": "v = 5\nprint(v)"})
        self.assertEqual(r.status, 200)
        self.assertEqual(j["status"], "Succeeded")
        self.assertEqual(j["identifier"], "exec-c")
        self.assertEqual(j["result"]["stdout"], "5\n")
        self.assertEqual(r.header("operation-id"), j["id"])
        self.assertEqual(r.header("Operation-Location"), "executions/%s?identifier=exec-c" % j["id"])
        r, j = self.srv.json("POST", "/pools/default/executions?identifier=exec-c",
                             {"properties": {"executionType": "Asynchronous",
                                             "code": "import time\ntime.sleep(0.3)\nv + 1"}})
        self.assertIn(r.status, (200, 202))
        self.assertEqual(j["status"], "Running")
        exec_id = j["id"]
        for _ in range(100):
            r, j = self.srv.json("GET", "/executions/%s?identifier=exec-c" % exec_id)
            self.assertEqual(r.status, 200)
            if j["status"] != "Running":
                break
            time.sleep(0.05)
        self.assertEqual(j["status"], "Succeeded")
        self.assertEqual(j["result"]["executionResult"], 6)
        r, _ = self.srv.json("GET", "/executions/nope?identifier=exec-c")
        self.assertAzureError(r, 404, "ExecutionNotFound")

    def test_output_streams_truncated_in_c_family(self):
        r, j = self.srv.json("POST", "/executions?identifier=trunc-1",
                             {"code": "print('a' * 10000)", "outputStreamsMaxLength": 100})
        self.assertEqual(len(j["result"]["stdout"]), 100)

    def test_session_get_delete_and_listings(self):
        execute(self.srv, "life-1", "z = 1")
        r, j = self.srv.json("GET", "/session?identifier=life-1")
        self.assertEqual(r.status, 200)
        for k in ("identifier", "createdAt", "lastAccessedAt", "expireAt", "expiresAt", "etag", "state"):
            self.assertIn(k, j)
        r, j = self.srv.json("POST", "/.management/getSession?identifier=life-1")
        self.assertEqual(j["identifier"], "life-1")
        r, j = self.srv.json("GET", "/listSessions")
        self.assertIn("life-1", [s["identifier"] for s in j["sessions"]])
        self.assertIsNone(j["nextLink"])
        r, j = self.srv.json("POST", "/.management/listSessions")
        self.assertEqual(j["count"], len(j["value"]))
        r = self.srv.request("DELETE", "/session?identifier=life-1")
        self.assertEqual(r.status, 204)
        r, _ = self.srv.json("GET", "/session?identifier=life-1")
        self.assertAzureError(r, 404, "SessionNotFound")
        r, j = execute(self.srv, "life-1", "'z' in globals()")
        self.assertEqual(j["properties"]["result"], False)  # a fresh sandbox
        r = self.srv.request("POST", "/.management/stopSession?identifier=life-1")
        self.assertEqual(r.status, 200)
        self.assertEqual(r.body, b"Session life-1 in session pool default stopped.")

    def test_sessions_do_not_see_each_other(self):
        execute(self.srv, "iso-a", "secret = 'a'\nopen('/mnt/data/a.txt', 'w').write('a')")
        r, j = execute(self.srv, "iso-b", "import os\n('secret' in globals(), sorted(os.listdir('/mnt/data')))")
        self.assertEqual(j["properties"]["result"], "(False, [])")

    def test_concurrent_sessions_run_in_parallel(self):
        results = {}

        def run(i):
            r, j = execute(self.srv, "par-%d" % i, "import time\ntime.sleep(0.5)\n%d" % i)
            results[i] = j["properties"]["result"]

        start = time.monotonic()
        threads = [threading.Thread(target=run, args=(i,)) for i in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        self.assertEqual(results, {0: 0, 1: 1, 2: 2})
        self.assertLess(time.monotonic() - start, 1.4)

    def test_percent_encoded_identifier_is_the_same_session(self):
        execute(self.srv, "enc%7Bid%7D", "w = 'same'")
        r, j = execute(self.srv, "enc{id}", "w")
        self.assertEqual(j["properties"]["result"], "same")

    def test_bad_input_allocates_nothing(self):
        before = self.session_count()
        bad = [
            ("/code/execute", {"code": "1"}),  # no identifier
            ("/code/execute?identifier=abc", {"code": "1"}),
            ("/code/execute?identifier=" + "x" * 129, {"code": "1"}),
            ("/code/execute?identifier=has%20space", {"code": "1"}),
            ("/code/execute?identifier=bad%2Fslash", {"code": "1"}),
        ]
        for target, body in bad:
            r, _ = self.srv.json("POST", target, body)
            self.assertAzureError(r, 400, "InvalidIdentifier")
        for body in (b"", b"not json", b"[1]", b'{"code": 5}', b'{"properties": []}', b'{"nocode": 1}',
                     b'{"code": "1", "timeoutInSeconds": -1}', b'{"code": "1", "executionType": "later"}',
                     b'{"code": "1", "codeInputType": "url"}', b'{"code": ""}'):
            r = self.srv.request("POST", "/code/execute?identifier=badbody1", body, {"Content-Type": "application/json"})
            self.assertAzureError(r, 400, "InvalidRequestBody")
        r, _ = self.srv.json("POST", "/pools/nope/code/execute?identifier=abcd", {"code": "1"})
        self.assertAzureError(r, 404, "PoolNotFound")
        self.assertEqual(self.session_count(), before)

    def test_metadata_lists_real_packages(self):
        r, j = self.srv.json("GET", "/metadata")
        names = {p["name"].lower() for p in j["preInstalledPackages"]}
        self.assertTrue({"numpy", "pandas", "matplotlib"} <= names, names)
        self.assertEqual(j["runtimes"][0]["name"], "python")

    def test_timeout_interrupts_and_session_survives(self):
        execute(self.srv, "tmo-1", "keep = 1")
        r, j = execute(self.srv, "tmo-1", "import time\ntime.sleep(30)", timeoutInSeconds=1)
        p = j["properties"]
        self.assertEqual(p["status"], "Failure")
        self.assertIn("ExecutionTimeout", p["stderr"])
        r, j = execute(self.srv, "tmo-1", "keep")
        self.assertEqual(j["properties"]["result"], 1)  # interrupted, not restarted: variables kept

    def test_pool_full_then_free(self):
        r, j = self.srv.json("POST", "/pools", {"name": "tiny", "maxConcurrentSessions": 2, "readySessionInstances": 1})
        self.assertEqual(r.status, 201, r)
        try:
            for ident in ("full-1", "full-2"):
                r, j = execute(self.srv, ident, "1", path="/pools/tiny/code/execute")
                self.assertEqual(r.status, 200, r)
            r, _ = execute(self.srv, "full-3", "1", path="/pools/tiny/code/execute")
            self.assertAzureError(r, 429, "SessionPoolFull")
            self.assertIsNotNone(r.header("Retry-After"))
            self.assertEqual(self.session_count("tiny"), 2)
            self.srv.request("DELETE", "/pools/tiny/session?identifier=full-1")
            r, _ = execute(self.srv, "full-3", "1", path="/pools/tiny/code/execute")
            self.assertEqual(r.status, 200, r)
        finally:
            self.assertEqual(self.srv.request("DELETE", "/pools/tiny").status, 204)

    def test_cooldown_ends_the_session(self):
        r, _ = self.srv.json("POST", "/pools", {"name": "cool", "cooldownPeriodInSeconds": 1, "readySessionInstances": 1})
        self.assertEqual(r.status, 201, r)
        try:
            execute(self.srv, "cool-1", "v = 'old'\nopen('f.txt', 'w').write('x')", path="/pools/cool/code/execute")
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                r, _ = self.srv.json("GET", "/pools/cool/session?identifier=cool-1")
                if r.status == 404:
                    break
                time.sleep(0.2)
            self.assertEqual(r.status, 404)
            r, j = execute(self.srv, "cool-1", "import os\n('v' in globals(), os.path.exists('f.txt'))",
                           path="/pools/cool/code/execute")
            self.assertEqual(j["properties"]["result"], "(False, False)")
            text = self.srv.request("GET", "/metrics").body.decode()
            self.assertRegex(text, r'sandpool_pool_expiries_total\{pool="cool"\} [1-9]')
        finally:
            self.srv.request("DELETE", "/pools/cool")

    def test_shell_pool(self):
        r, _ = self.srv.json("POST", "/pools", {"name": "sh", "containerType": "Shell", "readySessionInstances": 1})
        self.assertEqual(r.status, 201, r)
        try:
            r, j = self.srv.json("POST", "/pools/sh/executions?identifier=shell-1",
                                 {"shellCommand": "echo hi; echo err >&2; exit 3"})
            self.assertEqual(j["status"], "3")
            self.assertEqual(j["result"]["stdout"], "hi\n")
            self.assertEqual(j["result"]["stderr"], "err\n")
            r, j = self.srv.json("POST", "/pools/sh/executions?identifier=shell-1",
                                 {"execCommandAndArgs": ["cat"], "stdin": "piped"})
            self.assertEqual((j["status"], j["result"]["stdout"]), ("0", "piped"))
        finally:
            self.srv.request("DELETE", "/pools/sh")

    def test_pool_management(self):
        r, j = self.srv.json("GET", "/pools")
        self.assertIn("default", [p["name"] for p in j["value"]])
        r, _ = self.srv.json("POST", "/pools", {"name": "Bad Name"})
        self.assertAzureError(r, 400, "InvalidPoolSettings")
        r, _ = self.srv.json("POST", "/pools", {"name": "default"})
        self.assertAzureError(r, 409, "PoolExists")
        r, j = self.srv.json("PATCH", "/pools/default", {"cooldownPeriodInSeconds": 600})
        self.assertEqual(j["cooldownPeriodInSeconds"], 600)
        r, _ = self.srv.json("GET", "/pools/nope")
        self.assertAzureError(r, 404, "PoolNotFound")

    def test_metrics_show_states_and_executions(self):
        execute(self.srv, "metrics-1", "1")
        text = self.srv.request("GET", "/metrics").body.decode()
        for state in ("Pending", "Ready", "Allocated", "Deleting"):
            self.assertIn('sandpool_pool_sessions{pool="default",state="%s"}' % state, text)
        self.assertRegex(text, r'sandpool_pool_executions_total\{pool="default",status="Success"\} [1-9]')
        self.assertIn('sandpool_pool_isolation{pool="default",tier="process"} 1', text)


class Auth(unittest.TestCase):
    def test_api_keys(self):
        with Server("--api-key", "k1", "--api-key", "k2", "--pool-ready", "1", pools=True) as srv:
            r, _ = execute(srv, "auth-1", "1")
            self.assertEqual(r.status, 401)
            r, _ = srv.json("POST", "/code/execute?identifier=auth-1", {"code": "1"}, {"Authorization": "Bearer nope"})
            self.assertEqual(r.status, 401)
            r, j = srv.json("POST", "/code/execute?identifier=auth-1", {"code": "1"}, {"Authorization": "Bearer k2"})
            self.assertEqual(r.status, 200)
            self.assertEqual(srv.request("GET", "/healthz").status, 200)  # server routes stay open


if __name__ == "__main__":
    harness.BINARY = os.path.abspath(sys.argv.pop(1))
    ok, why = sandboxes_work()
    if not ok:
        print("SKIP: this machine cannot make sandboxes (user namespaces / cgroups): " + why)
        sys.exit(77)
    unittest.main(verbosity=2)
