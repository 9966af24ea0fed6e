"""Integration tests of the HTTP/1.1 server: the real binary on port 0, raw sockets.

Usage: http_test.py PATH_TO_SANDPOOL
"""
import json
import os
import re
import resource
import signal
import socket
import sys
import time
import unittest

import harness
from harness import Server


def azure_error(testcase, r, status, code=None):
    testcase.assertEqual(r.status, status, r)
    body = json.loads(r.body)
    testcase.assertEqual(set(body), {"error"})
    testcase.assertEqual(set(body["error"]), {"code", "message", "traceId"})
    testcase.assertEqual(r.header("x-ms-error-code"), body["error"]["code"])
    if code:
        testcase.assertEqual(body["error"]["code"], code)


class Basics(harness.ServerTestCase, unittest.TestCase):
    SERVER_FLAGS = ("--test-routes", "--max-body-bytes", "4096")

    def test_healthz_and_date(self):
        r = self.srv.request("GET", "/healthz")
        self.assertEqual(r.status, 200)
        self.assertEqual(r.body, b"ok\n")
        self.assertRegex(r.header("Date"), r"^[A-Z][a-z]{2}, \d\d [A-Z][a-z]{2} \d{4} \d\d:\d\d:\d\d GMT$")
        self.assertEqual(r.header("Connection"), "close")

    def test_head_has_length_but_no_body(self):
        c = self.srv.connect()
        c.send_request("HEAD", "/healthz")
        r = c.read_response(head=True)
        self.assertEqual(r.status, 200)
        self.assertEqual(r.header("Content-Length"), "3")
        # The next response follows at once: no body bytes were sent for HEAD.
        c.send_request("GET", "/healthz")
        self.assertEqual(c.read_response().body, b"ok\n")
        c.close()

    def test_keep_alive_many_requests(self):
        c = self.srv.connect()
        for _ in range(50):
            c.send_request("GET", "/healthz")
            r = c.read_response()
            self.assertEqual(r.status, 200)
            self.assertIsNone(r.header("Connection"))
        c.close()

    def test_pipelined_answers_in_order_across_async_handler(self):
        c = self.srv.connect()
        reqs = (b"GET /_test/sleep?ms=50 HTTP/1.1\r\nHost: x\r\n\r\n"
                b"POST /_test/echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nfirst"
                b"GET /nope HTTP/1.1\r\nHost: x\r\n\r\n"
                b"POST /_test/echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nsec\r\n3\r\nond\r\n0\r\n\r\n"
                b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        c.send(reqs)
        self.assertEqual(c.read_response().body, b"slept\n")
        self.assertEqual(c.read_response().body, b"first")
        self.assertEqual(c.read_response().status, 404)
        self.assertEqual(c.read_response().body, b"second")
        self.assertEqual(c.read_response().body, b"ok\n")
        c.close()

    def test_pipelined_bytes_split_anywhere(self):
        c = self.srv.connect()
        reqs = b"POST /_test/echo HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabcGET /healthz HTTP/1.1\r\n\r\n" * 5
        for i in range(0, len(reqs), 7):
            c.send(reqs[i:i + 7])
            time.sleep(0.001)
        for _ in range(5):
            self.assertEqual(c.read_response().body, b"abc")
            self.assertEqual(c.read_response().body, b"ok\n")
        c.close()

    def test_chunked_body(self):
        r = self.srv.request("POST", "/_test/echo", b"5\r\nhello\r\n1;x=y\r\n!\r\n0\r\n\r\n",
                             {"Transfer-Encoding": "chunked", "Content-Type": "text/x-test"})
        self.assertEqual(r.status, 200)
        self.assertEqual(r.body, b"hello!")
        self.assertEqual(r.header("Content-Type"), "text/x-test")

    def test_expect_100_continue(self):
        c = self.srv.connect()
        c.send(b"POST /_test/echo HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 4\r\n\r\n")
        interim = c.read_until(b"\r\n\r\n")
        self.assertTrue(interim.startswith(b"HTTP/1.1 100 Continue\r\n"), interim)
        c.send(b"data")
        self.assertEqual(c.read_response().body, b"data")
        c.close()

    def test_expect_with_too_large_body_gets_413_without_100(self):
        c = self.srv.connect()
        c.send(b"POST /_test/echo HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 99999999\r\n\r\n")
        r = c.read_response()
        azure_error(self, r, 413)
        self.assertEqual(r.header("Connection"), "close")
        self.assertTrue(c.closed_by_peer())
        c.close()

    def test_413_without_reading_the_body(self):
        # The route limit is 64 MiB for echo; healthz has the server default (4096 bytes).
        c = self.srv.connect()
        c.send(b"POST /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000\r\n\r\n" + b"x" * 1000)
        r = c.read_response()
        azure_error(self, r, 413, "PayloadTooLarge")
        self.assertTrue(c.closed_by_peer())
        c.close()

    def test_chunked_over_limit_is_413(self):
        c = self.srv.connect()
        c.send(b"POST /healthz HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
        for _ in range(10):
            c.send(b"400\r\n" + b"y" * 1024 + b"\r\n")
        r = c.read_response()
        azure_error(self, r, 413)
        c.close()

    def test_connection_close_is_honoured(self):
        c = self.srv.connect()
        c.send_request("GET", "/healthz", headers={"Connection": "close"})
        r = c.read_response()
        self.assertEqual(r.header("Connection"), "close")
        self.assertTrue(c.closed_by_peer())
        c.close()

    def test_http10_closes(self):
        c = self.srv.connect()
        c.send(b"GET /healthz HTTP/1.0\r\n\r\n")
        self.assertEqual(c.read_response().status, 200)
        self.assertTrue(c.closed_by_peer())
        c.close()

    def test_404_and_405(self):
        azure_error(self, self.srv.request("GET", "/no/such/route"), 404, "NotFound")
        r = self.srv.request("DELETE", "/healthz")
        azure_error(self, r, 405, "MethodNotAllowed")
        self.assertEqual(r.header("Allow"), "GET, HEAD")

    def test_414_and_431(self):
        c = self.srv.connect()
        c.send(b"GET /" + b"a" * 10000 + b" HTTP/1.1\r\n\r\n")
        azure_error(self, c.read_response(), 414, "UriTooLong")
        c.close()
        c = self.srv.connect()
        c.send(b"GET / HTTP/1.1\r\n" + b"X-Big: " + b"b" * 70000 + b"\r\n\r\n")
        azure_error(self, c.read_response(), 431)
        self.assertTrue(c.closed_by_peer())
        c.close()

    def test_malformed_is_400_and_closes(self):
        for bad in (b"NOT A REQUEST\r\n\r\n", b"GET / HTTP/1.1\r\nContent-Length: x\r\n\r\n",
                    b"GET / HTTP/1.1\r\nHost\r\n\r\n", b"\x00\x01\x02\r\n\r\n",
                    b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nnothex\r\n"):
            c = self.srv.connect()
            c.send(bad)
            r = c.read_response()
            azure_error(self, r, 400, "BadRequest")
            self.assertEqual(r.header("Connection"), "close")
            self.assertTrue(c.closed_by_peer())
            c.close()

    def test_disconnects_mid_request_leave_the_server_fine(self):
        for partial in (b"GET /heal", b"POST /_test/echo HTTP/1.1\r\nContent-Length: 100\r\n\r\nonly-some",
                        b"POST /_test/echo HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab"):
            c = self.srv.connect()
            c.send(partial)
            c.close()
        # A reset (RST) in the middle of a body.
        c = self.srv.connect()
        c.send(b"POST /_test/echo HTTP/1.1\r\nContent-Length: 100\r\n\r\nxx")
        c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        c.close()
        # A client that leaves while its async request is being handled.
        c = self.srv.connect()
        c.send_request("GET", "/_test/sleep?ms=100")
        c.close()
        time.sleep(0.2)
        self.assertEqual(self.srv.request("GET", "/healthz").status, 200)

    def test_half_closed_client_gets_all_answers(self):
        c = self.srv.connect()
        c.send(b"GET /_test/sleep?ms=20 HTTP/1.1\r\n\r\nGET /healthz HTTP/1.1\r\n\r\n")
        c.sock.shutdown(socket.SHUT_WR)
        self.assertEqual(c.read_response().body, b"slept\n")
        self.assertEqual(c.read_response().body, b"ok\n")
        self.assertTrue(c.closed_by_peer())
        c.close()

    def test_metrics(self):
        self.srv.request("GET", "/healthz")
        r = self.srv.request("GET", "/metrics")
        self.assertEqual(r.status, 200)
        self.assertTrue(r.header("Content-Type").startswith("text/plain; version=0.0.4"))
        text = r.body.decode()
        self.assertRegex(text, r'sandpool_http_requests_total\{route="GET /healthz",code="200"\} \d+')
        self.assertRegex(text, r"sandpool_http_connections_open \d+")
        self.assertRegex(text, r"sandpool_http_connections_total \d+")
        self.assertRegex(text, r"sandpool_loop_busy_poll_hits_total \d+")
        self.assertRegex(text, r"sandpool_loop_busy_poll_seconds_total [0-9.e+-]+")
        self.assertRegex(text, r'sandpool_http_request_duration_seconds_bucket\{route="GET /healthz",le="\+Inf"\} \d+')
        fds = int(re.search(r"^process_open_fds (\d+)$", text, re.M).group(1))
        self.assertLessEqual(abs(fds - len(os.listdir("/proc/%d/fd" % self.srv.proc.pid))), 2)  # (the scrape's connection)
        self.assertEqual(int(re.search(r"^process_max_fds (\d+)$", text, re.M).group(1)),
                         OpenFilesLimit.limits(self.srv.proc.pid)[0])
        for line in text.splitlines():
            self.assertRegex(line, r'^(# (HELP|TYPE) \w+ .+|\w+(\{[^}]*\})? [-+0-9.e]+|\w+\{[^}]*\} \d+)$')

    def test_readyz(self):
        self.assertEqual(self.srv.request("GET", "/readyz").status, 200)

    def test_loop_thread_only(self):
        # DESIGN.md §1: the loop uses no libuv thread pool; with no pools the server has one thread.
        tasks = os.listdir("/proc/%d/task" % self.srv.proc.pid)
        self.assertEqual(len(tasks), 1, tasks)


class Timeouts(unittest.TestCase):
    def test_slow_headers_get_408(self):
        with Server("--header-timeout-ms", "300") as srv:
            c = srv.connect()
            c.send(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
            start = time.monotonic()
            r = c.read_response()
            azure_error(self, r, 408, "RequestTimeout")
            self.assertLess(time.monotonic() - start, 5)
            self.assertTrue(c.closed_by_peer())
            c.close()

    def test_trickling_headers_do_not_reset_the_clock(self):
        with Server("--header-timeout-ms", "400") as srv:
            c = srv.connect()
            c.send(b"GET /healthz HTTP/1.1\r\n")
            got = None
            for _ in range(40):
                try:
                    c.send(b"X-A: b\r\n")
                except (BrokenPipeError, ConnectionResetError):
                    break
                time.sleep(0.05)
                c.sock.settimeout(0.001)
                try:
                    got = c.sock.recv(65536)
                except (socket.timeout, BlockingIOError):
                    continue
                except ConnectionResetError:
                    break
                break
            self.assertIsNotNone(got)
            self.assertIn(b" 408 ", got)
            c.close()

    def test_idle_keep_alive_closes(self):
        with Server("--idle-timeout-ms", "300") as srv:
            c = srv.connect()
            c.send_request("GET", "/healthz")
            self.assertEqual(c.read_response().status, 200)
            start = time.monotonic()
            self.assertTrue(c.closed_by_peer(timeout=5))
            self.assertGreater(time.monotonic() - start, 0.2)
            c.close()


class ConnectionLimit(unittest.TestCase):
    def test_accepting_pauses_and_resumes(self):
        with Server("--max-connections", "2") as srv:
            a, b = srv.connect(), srv.connect()
            for c in (a, b):
                c.send_request("GET", "/healthz")
                self.assertEqual(c.read_response().status, 200)
            third = srv.connect()  # completes in the kernel's backlog, not yet accepted
            third.send_request("GET", "/healthz")
            third.sock.settimeout(0.3)
            with self.assertRaises(socket.timeout):
                third.sock.recv(1)
            a.close()
            third.sock.settimeout(5)
            self.assertEqual(third.read_response().status, 200)
            b.close()
            third.close()


class OpenFilesLimit(unittest.TestCase):
    # Each session holds two descriptors: the server raises its soft limit (often 1024) to the hard one.
    @staticmethod
    def limits(pid):
        with open("/proc/%d/limits" % pid) as f:
            line = [l for l in f if l.startswith("Max open files")][0]
        return [int(v) for v in line.split()[3:5]]

    def test_soft_limit_raised_to_the_hard_one(self):
        with Server(preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (1024, 8192))) as srv:
            self.assertEqual(self.limits(srv.proc.pid), [8192, 8192])
            self.assertEqual(srv.request("GET", "/healthz").status, 200)
            self.assertNotIn("open files", srv.log())

    def test_a_low_hard_limit_is_reported(self):
        with Server(preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (512, 512))) as srv:
            self.assertEqual(self.limits(srv.proc.pid), [512, 512])
            self.assertEqual(srv.request("GET", "/healthz").status, 200)
            self.assertIn("open files limited to 512 (hard limit)", srv.log())


class AccessLog(unittest.TestCase):
    def test_one_json_line_per_request(self):
        with Server("--access-log", "-") as srv:
            srv.request("GET", "/healthz")
            srv.request("GET", "/missing?q=\x01".replace("\x01", "%01"))
            rc = srv.stop()
            self.assertEqual(rc, 0)
            lines = srv.proc.stdout.read().decode().splitlines()
        self.assertEqual(len(lines), 2, lines)
        first, second = json.loads(lines[0]), json.loads(lines[1])
        self.assertEqual(first["status"], 200)
        self.assertEqual(first["route"], "GET /healthz")
        self.assertEqual(second["status"], 404)
        self.assertEqual(second["target"], "/missing?q=%01")
        for key in ("time", "peer", "method", "bytes", "duration_us"):
            self.assertIn(key, first)


class ErrorAfterAnotherRequest(unittest.TestCase):
    def test_error_answer_and_log_line_are_the_new_requests(self):
        # A HEAD answered, then a request refused before its head is complete (431) on the same connection: the
        # refusal has its body (a GET's) and its access log line shows nothing of the HEAD (whose target the
        # parser's grown head buffer no longer holds: a use after free under ASan). Found by tests/fuzz/api_fuzz.py.
        with Server("--access-log", "-") as srv:
            c = srv.connect()
            c.send(b"HEAD /healthz?" + b"q" * 200 + b" HTTP/1.1\r\nHost: x\r\n\r\n"
                   b"GET /x HTTP/1.1\r\nX-Big: " + b"b" * 70000 + b"\r\n\r\n")
            self.assertEqual(c.read_response(head=True).status, 200)
            azure_error(self, c.read_response(), 431)
            self.assertTrue(c.closed_by_peer())
            c.close()
            self.assertEqual(srv.stop(), 0)
            lines = [json.loads(line) for line in srv.proc.stdout.read().decode().splitlines()]
        self.assertEqual([x["status"] for x in lines], [200, 431])
        self.assertEqual(lines[1]["method"], "GET")
        self.assertEqual(lines[1]["target"], "")


class ApiKeys(unittest.TestCase):
    def test_the_token_is_judged_before_file_names(self):
        # API.md §1: with keys configured a request without a valid token gets 401, whatever else is wrong with it
        # (the file routes answered 400 InvalidFileName first: tests/fuzz/api_fuzz.py).
        with Server("--api-key", "k1") as srv:
            for method, target in (("GET", "/pools/p/files/..%2Fx?identifier=abcd"), ("DELETE", "/files/a%00b?identifier=abcd"),
                                   ("GET", "/files/content/..?identifier=abcd"), ("GET", "/files/..%2Fx/content?identifier=abcd"),
                                   ("GET", "/pools/p/files?identifier=abcd&path=..")):
                for auth in ({}, {"Authorization": "Bearer k2"}):
                    r = srv.request(method, target, headers=auth)
                    azure_error(self, r, 401, "Unauthorized")
                    self.assertEqual(r.header("WWW-Authenticate"), "Bearer")
            # With the key, the name is judged.
            r = srv.request("GET", "/pools/p/files/..%2Fx?identifier=abcd", headers={"Authorization": "Bearer k1"})
            azure_error(self, r, 400, "InvalidFileName")

    def test_every_route_but_the_open_ones_needs_the_key(self):
        # One check in Api for all routes: every route /openapi.json describes answers 401 without a
        # valid key (path parameters filled in; the pool does not exist), except the open ones and
        # the custom-container proxy's /pools/{pool}/{path}, which claims only an existing container
        # pool's paths (container_test.py checks its key).
        open_routes = {("get", "/healthz"), ("get", "/readyz"), ("get", "/metrics"), ("get", "/openapi.json")}
        with Server("--api-key", "k1") as srv:
            doc = json.loads(srv.request("GET", "/openapi.json").body)
            checked = 0
            for path, ops in doc["paths"].items():
                if path.endswith("/{path}"):
                    continue
                target = re.sub(r"\{[^}]+\}", "p1234", path) + "?identifier=abcd"
                for method in ops:
                    if method not in ("get", "post", "put", "patch", "delete"):
                        continue
                    r = srv.request(method.upper(), target, body=b"{}" if method != "get" else b"",
                                    headers={"Authorization": "Bearer k2"})
                    if (method, path) in open_routes:
                        self.assertNotEqual(r.status, 401, (method, path))
                    else:
                        azure_error(self, r, 401, "Unauthorized")
                        checked += 1
            self.assertGreater(checked, 30)
            self.assertTrue(all(p in doc["paths"] for _, p in open_routes))


class Shutdown(unittest.TestCase):
    def test_in_flight_request_finishes_then_exit_0(self):
        with Server("--test-routes") as srv:
            c = srv.connect()
            c.send_request("GET", "/_test/sleep?ms=400")
            idle = srv.connect()
            idle.send_request("GET", "/healthz")
            idle.read_response()
            time.sleep(0.05)
            srv.signal(signal.SIGTERM)
            self.assertTrue(idle.closed_by_peer(timeout=2))  # idle keep-alive connections close at once
            r = c.read_response()
            self.assertEqual(r.status, 200)
            self.assertEqual(r.body, b"slept\n")
            self.assertEqual(r.header("Connection"), "close")
            self.assertEqual(srv.proc.wait(timeout=10), 0)
            self.assertIn("stopped", srv.log())
            with self.assertRaises(OSError):
                socket.create_connection(("127.0.0.1", srv.port), timeout=1)
            c.close()
            idle.close()

    def test_shutdown_is_bounded(self):
        with Server("--test-routes", "--shutdown-timeout-ms", "300") as srv:
            c = srv.connect()
            c.send_request("GET", "/_test/sleep?ms=60000")
            time.sleep(0.05)
            start = time.monotonic()
            srv.signal(signal.SIGINT)
            self.assertEqual(srv.proc.wait(timeout=10), 0)
            self.assertLess(time.monotonic() - start, 3)
            self.assertTrue(c.closed_by_peer(timeout=2))
            self.assertNotIn("did not close cleanly", srv.log())
            c.close()

    def test_half_sent_head_gets_a_short_grace_at_shutdown(self):
        # The default shutdown timeout and header timeout are both 10 s: a head still arriving
        # gets 1 s to complete, then 408, instead of holding the exit for 10 s.
        with Server() as srv:
            stalled = srv.connect()
            stalled.send(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
            finishing = srv.connect()
            finishing.send(b"GET /healthz HTTP/1.1\r\n")
            time.sleep(0.05)
            start = time.monotonic()
            srv.signal(signal.SIGTERM)
            time.sleep(0.2)
            finishing.send(b"Host: x\r\n\r\n")  # completed within the grace: answered, then closed
            r = finishing.read_response()
            self.assertEqual((r.status, r.body, r.header("Connection")), (200, b"ok\n", "close"))
            r = stalled.read_response()
            self.assertEqual(r.status, 408)
            self.assertEqual(srv.proc.wait(timeout=10), 0)
            self.assertLess(time.monotonic() - start, 4)
            stalled.close()
            finishing.close()

    def test_partial_request_at_shutdown(self):
        with Server("--shutdown-timeout-ms", "300") as srv:
            c = srv.connect()
            c.send(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
            time.sleep(0.05)
            srv.signal(signal.SIGTERM)
            self.assertEqual(srv.proc.wait(timeout=10), 0)
            c.close()


class BadFlags(unittest.TestCase):
    def test_bad_flags_exit_2_with_a_message(self):
        import subprocess
        for args in (["--max-connections", "0"], ["--listen", "nope"], ["--bogus"], ["--log-level", "loud"]):
            p = subprocess.run([harness.BINARY, "serve"] + args, capture_output=True, timeout=10)
            self.assertEqual(p.returncode, 2, args)
            self.assertIn(b"sandpool serve:", p.stderr)

    def test_port_in_use_fails_cleanly(self):
        with Server() as a:
            import subprocess
            p = subprocess.run([harness.BINARY, "serve", "--no-default-pool", "--listen", "127.0.0.1:%d" % a.port], capture_output=True,
                               timeout=10)
            self.assertEqual(p.returncode, 1)
            self.assertIn(b"address already in use", p.stderr.lower())


if __name__ == "__main__":
    harness.BINARY = os.path.abspath(sys.argv.pop(1))
    unittest.main(verbosity=2)
