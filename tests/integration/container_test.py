"""Integration tests of custom-container pools (issue 5): the proxy to targetPort, lifecycles, probes
and stopSession, against the real binary running the test images of tools/make-test-images.py in
real sandboxes. Exit 77 (skip) when this machine cannot make sandboxes.

Usage: container_test.py PATH_TO_SANDPOOL PATH_TO_MAKE_TEST_IMAGES
"""
import base64
import errno
import hashlib
import json
import os
import socket
import struct
import subprocess
import sys
import tempfile
import time
import unittest

import harness
from harness import Server

IMAGES = None  # directory of the built test images
MAKE_IMAGES = ""


def pool(name, image="pyapp", **extra):
    p = {"name": name, "containerType": "CustomContainer", "image": os.path.join(IMAGES, image), "targetPort": 8080,
         "readySessionInstances": 1, "maxConcurrentSessions": 32, "cooldownPeriodInSeconds": 300,
         "env": [{"name": "QUIET", "value": "1"}]}
    p.update(extra)
    return p


def start_server(store, *pools, flags=()):
    path = os.path.join(store, "pools-%d.json" % time.monotonic_ns())
    with open(path, "w") as f:
        json.dump({"pools": list(pools)}, f)
    srv = Server("--pools-file", path, "--image-store", os.path.join(store, "images"), *flags)
    srv.start()
    return srv


def metric(srv, name):
    body = srv.request("GET", "/metrics").body.decode()
    total = 0
    for line in body.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            total += float(line.rsplit(" ", 1)[1])
    return total


def wait_for_metric(srv, name, at_least, timeout=10):
    """The metric's value once it reaches `at_least`, or when `timeout` seconds have passed."""
    deadline = time.monotonic() + timeout
    while metric(srv, name) < at_least and time.monotonic() < deadline:
        time.sleep(0.1)
    return metric(srv, name)


def read_chunked(conn):
    out = bytearray()
    while True:
        size = int(conn.read_until(b"\r\n")[:-2].split(b";")[0], 16)
        if size == 0:
            conn.read_until(b"\r\n")
            return bytes(out)
        out += conn.read_exact(size)
        conn.read_exact(2)


def data_segments_in(sock):
    # tcpi_data_segs_in of struct tcp_info (linux/tcp.h; Linux 4.6+): segments received with data.
    info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 256)
    return struct.unpack_from("I", info, 152)[0]


def pattern(n):
    block = bytes(i % 251 for i in range(251 * 1024))
    reps, rest = divmod(n, len(block))
    return block * reps + block[:rest]


class Proxy(unittest.TestCase):
    """One server with the pyapp pool; requests go through the proxy."""

    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.TemporaryDirectory(prefix="sp-ct-")
        os.chmod(cls.tmp.name, 0o755)  # the sandboxes' ids must reach the image store
        cls.srv = start_server(cls.tmp.name, pool("app", readySessionInstances=2),
                               pool("quick", upstreamTimeoutInSeconds=1))

    @classmethod
    def tearDownClass(cls):
        rc = cls.srv.stop()
        cls.srv.proc.stdout.close()
        cls.srv.dir.cleanup()
        cls.tmp.cleanup()
        assert rc == 0, cls.srv.log()

    def echo(self, method, ident="echo-1", body=b"", headers=None, path="/echo/a%20b?x=1&y=2"):
        target = "/pools/app" + path + ("&" if "?" in path else "?") + "identifier=" + ident
        r = self.srv.request(method, target, body, headers)
        self.assertEqual(r.status, 200, r)
        return json.loads(r.body)

    def test_methods_paths_queries_headers(self):
        for method in ("GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"):
            j = self.echo(method, body=b"abc" if method in ("POST", "PUT", "PATCH") else b"",
                          headers={"X-Custom": "v1", "Authorization": "Bearer tok", "Cookie": "a=b"})
            self.assertEqual(j["method"], method)
            self.assertEqual(j["path"], "/echo/a%20b")
            self.assertEqual(j["query"], "x=1&y=2&identifier=echo-1")
            names = {k.lower(): v for k, v in j["headers"]}
            self.assertEqual(names["x-custom"], "v1")
            self.assertEqual(names["authorization"], "Bearer tok")  # no API keys: the token is the app's
            self.assertEqual(names["x-forwarded-for"], "127.0.0.1")
            self.assertEqual(names["x-forwarded-proto"], "http")
            self.assertEqual(names["x-forwarded-host"], "x")
            self.assertEqual(names["host"], "x")

    def test_hop_by_hop_headers_are_dropped(self):
        j = self.echo("GET", headers={"Connection": "close, X-Secret-Hop", "X-Secret-Hop": "1", "Keep-Alive": "timeout=5",
                                      "TE": "trailers", "Proxy-Authorization": "Basic x", "X-Forwarded-For": "10.1.2.3"})
        names = {k.lower(): v for k, v in j["headers"]}
        for gone in ("x-secret-hop", "keep-alive", "te", "proxy-authorization"):
            self.assertNotIn(gone, names)
        self.assertNotEqual(names.get("connection", "").lower(), "close, x-secret-hop")
        self.assertEqual(names["x-forwarded-for"], "10.1.2.3, 127.0.0.1")

    def test_bad_identifiers_allocate_nothing(self):
        before = metric(self.srv, "sandpool_pool_allocations_total")
        r = self.srv.request("GET", "/pools/app/echo")
        self.assertEqual(r.status, 400)
        self.assertEqual(json.loads(r.body)["error"]["code"], "InvalidIdentifier")
        r = self.srv.request("GET", "/pools/app/echo?identifier=a")
        self.assertEqual(r.status, 400)
        r = self.srv.request("POST", "/pools/app/upload?identifier=a", b"x" * 100000)
        self.assertEqual(r.status, 400)
        self.assertEqual(metric(self.srv, "sandpool_pool_allocations_total"), before)

    def test_pool_update_keeps_what_the_sandboxes_were_made_from(self):
        for change in ({"targetPort": 9090}, {"image": "/elsewhere"}, {"env": []},
                       {"lifecycleConfiguration": {"lifecycleType": "OnContainerExit"}}):
            r = self.srv.request("PATCH", "/pools/quick", json.dumps(change).encode(), {"Content-Type": "application/json"})
            self.assertEqual(r.status, 400, (change, r))
            self.assertEqual(json.loads(r.body)["error"]["code"], "InvalidPoolSettings")
        # The pools API's own routes are never forwarded; the pool endpoint with a slash is.
        r = self.srv.request("GET", "/pools/quick")
        self.assertEqual(json.loads(r.body)["name"], "quick")
        r = self.srv.request("GET", "/pools/quick/?identifier=root-1")
        self.assertEqual(r.status, 404)  # the app's own 404 for "/"
        self.assertEqual(r.body, b"not found\n")
        r = self.srv.request("PATCH", "/pools/quick", b'{"maxConcurrentSessions": 20, "upstreamTimeoutInSeconds": 1}',
                             {"Content-Type": "application/json"})
        self.assertEqual(r.status, 200, r)
        self.assertEqual(json.loads(r.body)["maxConcurrentSessions"], 20)

    def test_management_calls_are_not_forwarded(self):
        self.echo("GET", ident="mgmt-1")
        r = self.srv.request("POST", "/pools/app/.management/getSession?identifier=mgmt-1")
        self.assertEqual(r.status, 200, r)
        self.assertEqual(json.loads(r.body)["identifier"], "mgmt-1")
        r = self.srv.request("POST", "/pools/app/.management/listSessions")
        self.assertIn("mgmt-1", [s["identifier"] for s in json.loads(r.body)["value"]])

    def test_large_bodies_both_ways(self):
        n = 100 << 20
        data = os.urandom(1 << 20) * 100
        digest = hashlib.sha256(data).hexdigest()
        for headers in ({}, {"Transfer-Encoding": "chunked"}):
            c = self.srv.connect(timeout=60)
            if headers:
                c.send_request("POST", "/pools/app/upload?identifier=big-1", b"", headers)
                for i in range(0, n, 1 << 20):
                    c.send(b"%x\r\n" % (1 << 20) + data[i:i + (1 << 20)] + b"\r\n")
                c.send(b"0\r\n\r\n")
            else:
                c.send_request("POST", "/pools/app/upload?identifier=big-1", data)
            r = c.read_response()
            c.close()
            self.assertEqual(r.status, 200, r)
            self.assertEqual(json.loads(r.body), {"len": n, "sha256": digest})
        want = hashlib.sha256(pattern(n)).hexdigest()
        r = self.srv.request("GET", "/pools/app/bytes?n=%d&identifier=big-1" % n)
        self.assertEqual(r.header("Content-Length"), str(n))
        self.assertEqual(hashlib.sha256(r.body).hexdigest(), want)
        c = self.srv.connect(timeout=60)
        c.send_request("GET", "/pools/app/bytes?n=%d&chunked=1&identifier=big-1" % n)
        r = c.read_response()
        self.assertEqual(r.header("Transfer-Encoding"), "chunked")
        self.assertEqual(hashlib.sha256(read_chunked(c)).hexdigest(), want)
        c.close()

    def test_head_keeps_the_length_without_a_body(self):
        c = self.srv.connect()
        c.send_request("HEAD", "/pools/app/healthz?identifier=head-1")
        r = c.read_response(head=True)
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.header("Content-Length"), "2")
        c.send_request("GET", "/pools/app/healthz?identifier=head-1")  # the connection is still in step
        self.assertEqual(c.read_response().body, b"ok")
        c.close()

    def test_server_sent_events_arrive_as_sent(self):
        c = self.srv.connect()
        c.send_request("GET", "/pools/app/sse?n=3&ms=300&identifier=sse-1")
        r = c.read_response()
        self.assertEqual(r.status, 200)
        self.assertIn("text/event-stream", r.header("Content-Type"))
        times = []
        t0 = time.monotonic()
        for i in range(3):
            size = int(c.read_until(b"\r\n")[:-2], 16)
            piece = c.read_exact(size + 2)[:-2]
            self.assertEqual(piece, b"data: %d\n\n" % i)
            times.append(time.monotonic() - t0)
        # Each event is forwarded when the container sends it, not when the stream ends.
        self.assertLess(times[0], 0.25)
        self.assertGreater(times[2] - times[0], 0.45)
        c.close()

    def test_an_answer_leaves_in_one_piece_and_a_late_body_does_not_hold_its_head(self):
        # The container writes an answer's head and body as two segments (TCP_NODELAY); the proxy
        # holds the head (at most 5 ms) for the body, so the client receives one segment, not two.
        c = self.srv.connect()
        target = "/pools/app/healthz?identifier=piece-1"
        c.send_request("GET", target)
        self.assertEqual(c.read_response().body, b"ok")  # the session and its container connection exist
        whole = 0
        for _ in range(20):
            before = data_segments_in(c.sock)
            c.send_request("GET", target)
            self.assertEqual(c.read_response().body, b"ok")
            whole += data_segments_in(c.sock) - before == 1
        # Not all: on a loaded machine the container may write a body more than 4 ms after its head.
        # (Without the hold, 2 of 20 arrived whole here.)
        self.assertGreaterEqual(whole, 12)
        # A body that comes late does not hold its head back.
        t0 = time.monotonic()
        c.send_request("GET", "/pools/app/bytes?n=5&delay_ms=1500&identifier=piece-1")
        c.read_until(b"\r\n\r\n")
        t_head = time.monotonic() - t0
        self.assertEqual(c.read_exact(5), pattern(5))
        self.assertLess(t_head, 0.75)
        self.assertGreater(time.monotonic() - t0, 1.4)
        c.close()

    def test_keep_alive_and_pipelining_reuse_the_container_connection(self):
        self.echo("GET", ident="ka-1")
        before = metric(self.srv, "sandpool_proxy_upstream_reuses_total")
        c = self.srv.connect()
        req = b"GET /pools/app/echo?identifier=ka-1 HTTP/1.1\r\nHost: x\r\n\r\n"
        c.send(req * 5)
        for _ in range(5):
            r = c.read_response()
            self.assertEqual(r.status, 200)
        c.close()
        self.assertGreaterEqual(metric(self.srv, "sandpool_proxy_upstream_reuses_total") - before, 4)

    def test_websocket_echo(self):
        c = self.srv.connect()
        key = base64.b64encode(os.urandom(16)).decode()
        c.send_request("GET", "/pools/app/ws?identifier=ws-1",
                       headers={"Upgrade": "websocket", "Connection": "Upgrade", "Sec-WebSocket-Key": key,
                                "Sec-WebSocket-Version": "13"})
        r = c.read_response(head=True)
        self.assertEqual(r.status, 101, r)
        accept = base64.b64encode(hashlib.sha1((key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").encode()).digest()).decode()
        self.assertEqual(r.header("Sec-WebSocket-Accept"), accept)
        for payload in (b"hello", os.urandom(70000)):
            mask = os.urandom(4)
            masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
            if len(payload) < 126:
                hdr = struct.pack("!BB", 0x82, 0x80 | len(payload))
            else:
                hdr = struct.pack("!BBQ", 0x82, 0x80 | 127, len(payload))
            c.send(hdr + mask + masked)
            b0, b1 = c.read_exact(2)
            n = b1 & 0x7F
            if n == 126:
                n = struct.unpack("!H", c.read_exact(2))[0]
            elif n == 127:
                n = struct.unpack("!Q", c.read_exact(8))[0]
            self.assertEqual(b0 & 0x0F, 2)
            self.assertEqual(c.read_exact(n), payload)
        mask = os.urandom(4)
        c.send(struct.pack("!BB", 0x88, 0x80) + mask)  # close
        self.assertTrue(c.closed_by_peer(timeout=5))
        c.close()

    def test_reset_is_a_bad_gateway(self):
        r = self.srv.request("GET", "/pools/app/reset?identifier=rst-1")
        self.assertEqual(r.status, 502, r)
        self.assertEqual(json.loads(r.body)["error"]["code"], "BadGateway")
        self.assertEqual(r.header("x-ms-error-code"), "BadGateway")
        self.assertEqual(self.srv.request("GET", "/pools/app/healthz?identifier=rst-1").body, b"ok")

    def test_hang_is_a_gateway_timeout(self):
        t0 = time.monotonic()
        r = self.srv.request("GET", "/pools/quick/slow?ms=5000&identifier=slow-1")
        self.assertEqual(r.status, 504, r)
        self.assertLess(time.monotonic() - t0, 4)
        self.assertEqual(self.srv.request("GET", "/pools/quick/slow?ms=10&identifier=slow-1").body, b"ok")

    def test_sessions_are_isolated_and_stop_session_wipes(self):
        r = self.srv.request("PUT", "/pools/app/file/secret?identifier=iso-a", b"mine")
        self.assertEqual(r.status, 201, r)
        self.assertEqual(self.srv.request("GET", "/pools/app/file/secret?identifier=iso-a").body, b"mine")
        self.assertEqual(self.srv.request("GET", "/pools/app/file/secret?identifier=iso-b").status, 404)
        r = self.srv.request("POST", "/pools/app/.management/stopSession?identifier=iso-a")
        self.assertEqual(r.status, 200)
        self.assertEqual(r.body, b"Session iso-a in session pool app stopped.")
        self.assertEqual(self.srv.request("GET", "/pools/app/file/secret?identifier=iso-a").status, 404)

    def test_client_gone_mid_download_frees_the_request(self):
        c = self.srv.connect()
        c.send_request("GET", "/pools/app/bytes?n=%d&identifier=gone-1" % (200 << 20))
        c.read_response(head=True)
        c.close()
        deadline = time.monotonic() + 10
        while metric(self.srv, "sandpool_proxy_active_requests") > 0 and time.monotonic() < deadline:
            time.sleep(0.1)
        self.assertEqual(metric(self.srv, "sandpool_proxy_active_requests"), 0)
        self.assertEqual(self.srv.request("GET", "/pools/app/healthz?identifier=gone-1").body, b"ok")


class Lifecycles(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.TemporaryDirectory(prefix="sp-ct-")
        os.chmod(cls.tmp.name, 0o755)

    @classmethod
    def tearDownClass(cls):
        cls.tmp.cleanup()

    def stop(self, srv):
        rc = srv.stop()
        log = srv.log()
        srv.proc.stdout.close()
        srv.dir.cleanup()
        self.assertEqual(rc, 0, log)

    def test_on_container_exit_and_max_alive(self):
        lc = {"lifecycleConfiguration": {"lifecycleType": "OnContainerExit", "maxAlivePeriodInSeconds": 3}}
        srv = start_server(self.tmp.name, pool("exit", **lc), pool("forever", **{"lifecycleConfiguration": {"lifecycleType": "OnContainerExit"}}))
        try:
            self.assertEqual(srv.request("PUT", "/pools/exit/file/f?identifier=ex-1", b"x").status, 201)
            r = srv.request("GET", "/pools/exit/exit?code=3&identifier=ex-1")
            self.assertEqual(r.body, b"bye")
            self.assertEqual(wait_for_metric(srv, "sandpool_pool_container_ends_total", 1), 1)
            self.assertIn("exited with status 3", srv.log())
            # The identifier gets a fresh sandbox: the file is gone.
            self.assertEqual(srv.request("GET", "/pools/exit/file/f?identifier=ex-1").status, 404)
            # maxAlivePeriodInSeconds ends a session that keeps running, requests or not.
            self.assertEqual(srv.request("PUT", "/pools/exit/file/g?identifier=ex-2", b"x").status, 201)
            r = srv.request("POST", "/pools/exit/.management/getSession?identifier=ex-2")
            self.assertNotEqual(json.loads(r.body)["expiresAt"], None)
            t0 = time.monotonic()
            while time.monotonic() - t0 < 8:
                r = srv.request("POST", "/pools/exit/.management/getSession?identifier=ex-2")
                if r.status == 404:
                    break
                time.sleep(0.2)
            self.assertEqual(r.status, 404, r)
            self.assertGreater(time.monotonic() - t0, 1.5)  # not before its time (3 s from allocation)
            # Without a bound the session lives on.
            self.assertEqual(srv.request("PUT", "/pools/forever/file/h?identifier=fv-1", b"x").status, 201)
            time.sleep(0.5)
            self.assertEqual(srv.request("GET", "/pools/forever/file/h?identifier=fv-1").body, b"x")
        finally:
            self.stop(srv)

    def test_liveness_failures_replace_ready_sandboxes_and_end_sessions(self):
        # Both pools' startup probes pass (TCP on 8080); "sick" answers its liveness probe with 404.
        sick = pool("sick", probes=[{"type": "Liveness", "httpGet": {"path": "/no-such-path", "port": 8080},
                                     "periodSeconds": 1, "failureThreshold": 2}])
        well = pool("well", probes=[{"type": "Liveness", "httpGet": {"path": "/healthz", "port": 8080},
                                     "periodSeconds": 1, "failureThreshold": 3}])
        srv = start_server(self.tmp.name, sick, well)
        ends = 'sandpool_pool_container_ends_total{pool="%s"}'
        try:
            self.assertEqual(srv.request("PUT", "/pools/sick/file/f?identifier=lv-1", b"x").status, 201)
            self.assertEqual(srv.request("PUT", "/pools/well/file/f?identifier=ok-1", b"x").status, 201)
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline and (
                    metric(srv, ends % "sick") < 1 or "a ready container was replaced" not in srv.log()):
                time.sleep(0.2)
            # The allocated session ended with its container; a ready sandbox was replaced.
            self.assertGreaterEqual(metric(srv, ends % "sick"), 1)
            self.assertIn("ended: liveness probe failed: HTTP status 404", srv.log())
            self.assertIn("a ready container was replaced: liveness probe failed", srv.log())
            # The identifier gets a fresh sandbox: the file is gone.
            self.assertEqual(srv.request("GET", "/pools/sick/file/f?identifier=lv-1").status, 404)
            # A container that passes its liveness probes keeps its session.
            self.assertEqual(srv.request("GET", "/pools/well/file/f?identifier=ok-1").body, b"x")
            self.assertEqual(metric(srv, ends % "well"), 0)
            self.assertNotIn("pool well: a ready container was replaced", srv.log())
        finally:
            self.stop(srv)

    def test_no_egress_and_the_cpu_and_memory_limits(self):
        srv = start_server(self.tmp.name, pool("small", resources={"cpu": 0.5, "memory": "256Mi"}))
        host = socket.socket()
        try:
            # A listener on the host's loopback: the container's 127.0.0.1 is its own, and it has no
            # other interface to reach anything through.
            host.bind(("127.0.0.1", 0))
            host.listen(1)
            r = srv.request("GET", "/pools/small/net?connect=127.0.0.1:%d&identifier=net-1" % host.getsockname()[1])
            self.assertEqual(r.status, 200, r)
            self.assertEqual(json.loads(r.body), {"interfaces": ["lo"], "connect_errno": errno.ECONNREFUSED})
            # resources.cpu 0.5: a second of spinning gets at most about half a second of CPU.
            got = json.loads(srv.request("GET", "/pools/small/burn?ms=1000&identifier=net-1").body)
            self.assertGreaterEqual(got["wall_s"], 1.0)
            self.assertLess(got["cpu_s"] / got["wall_s"], 0.65, got)
            # Within resources.memory an allocation works; over it the container is killed, the
            # request gets 502 and the session ends, reported as out of memory.
            self.assertEqual(srv.request("GET", "/pools/small/alloc?mb=64&identifier=mem-1").status, 200)
            r = srv.request("GET", "/pools/small/alloc?mb=512&identifier=mem-2")
            self.assertEqual(r.status, 502, r)
            self.assertEqual(wait_for_metric(srv, "sandpool_pool_container_ends_total", 1), 1)
            self.assertIn("killed: out of memory", srv.log())
            self.assertEqual(srv.request("GET", "/pools/small/healthz?identifier=mem-1").status, 200)
        finally:
            host.close()
            self.stop(srv)

    def test_timed_cooldown_and_probe_failure(self):
        never = pool("never", command=["/usr/bin/python3", "-c", "import time; time.sleep(60)"],
                     probes=[{"type": "Startup", "tcpSocket": {"port": 8080}, "periodSeconds": 1, "failureThreshold": 2}],
                     allocationWaitInMilliseconds=3000)
        srv = start_server(self.tmp.name, pool("cool", cooldownPeriodInSeconds=2), never)
        try:
            self.assertEqual(srv.request("PUT", "/pools/cool/file/f?identifier=cd-1", b"x").status, 201)
            for _ in range(3):  # requests keep it alive past its cooldown
                time.sleep(1)
                self.assertEqual(srv.request("GET", "/pools/cool/file/f?identifier=cd-1").body, b"x")
            time.sleep(3)
            self.assertEqual(srv.request("GET", "/pools/cool/file/f?identifier=cd-1").status, 404)
            # A container that never listens never becomes ready.
            r = srv.request("GET", "/pools/never/healthz?identifier=nv-1")
            self.assertEqual(r.status, 503, r)
            self.assertGreaterEqual(metric(srv, 'sandpool_pool_spawn_failures_total{pool="never"}'), 1)
            self.assertEqual(metric(srv, 'sandpool_pool_sessions{pool="never",state="Ready"}'), 0)
        finally:
            self.stop(srv)

    def test_deleting_a_pool_leaves_the_others_spawning(self):
        srv = start_server(self.tmp.name, pool("keep"), pool("gone"))
        try:
            self.assertEqual(srv.request("DELETE", "/pools/gone").status, 204)
            for i in range(3):  # beyond the one ready sandbox: these need new spawns
                r = srv.request("GET", "/pools/keep/healthz?identifier=keep-%d" % i)
                self.assertEqual(r.status, 200, r)
        finally:
            self.stop(srv)

    def test_unsearchable_image_store_is_a_clear_error(self):
        with tempfile.TemporaryDirectory(prefix="sp-ct-closed-") as closed:  # 0700: others cannot pass
            with self.assertRaises(RuntimeError) as ctx:
                start_server(closed, pool("closed"))
            self.assertIn("is not searchable by other users", str(ctx.exception))

    def test_a_binary_without_the_static_init_says_so(self):
        # The dynamic binary cannot run as init inside an image: the pool must fail at creation
        # with the reason, not spawn containers that die at once.
        with tempfile.TemporaryDirectory(prefix="sp-ct-noinit-") as d:
            os.chmod(d, 0o755)
            lone = os.path.join(d, "sandpool")
            with open(harness.BINARY, "rb") as src, open(lone, "wb") as dst:
                dst.write(src.read())
            os.chmod(lone, 0o755)
            path = os.path.join(d, "pools.json")
            with open(path, "w") as f:
                json.dump({"pools": [pool("noinit")]}, f)
            # (no SANDPOOL_RUNTIME_DIR: a sandpool-init there would be found, as the sanitized run means it to)
            env = {k: v for k, v in os.environ.items() if k != "SANDPOOL_RUNTIME_DIR"}
            p = subprocess.run([lone, "serve", "--listen", "127.0.0.1:0", "--no-default-pool", "--pools-file", path,
                                "--image-store", os.path.join(d, "images")], capture_output=True, text=True, timeout=60,
                               env=env)
            self.assertNotEqual(p.returncode, 0)
            self.assertIn("need the static sandpool-init", p.stderr)

    def test_container_output_goes_to_the_log_at_a_limited_rate(self):
        talk = pool("talk", env=[])  # the app says "listening on N" and logs each request on stderr
        broken = pool("broken", command=["/usr/bin/python3", "-c",
                                         "import sys; sys.stderr.write('no config \\x1b[31mhere\\n'); sys.exit(3)"])
        srv = start_server(self.tmp.name, talk, broken, flags=("--container-log-rate", "2"))
        try:
            self.assertEqual(srv.request("GET", "/pools/talk/healthz?identifier=talk-1").status, 200)
            deadline = time.monotonic() + 10
            while '"GET /healthz' not in srv.log() and time.monotonic() < deadline:
                time.sleep(0.1)
            log = srv.log()
            self.assertRegex(log, r"pool talk: container \d+: listening on 8080")
            self.assertRegex(log, r'pool talk: container \d+: 127\.0\.0\.1 "GET /healthz')
            # A container that fails at once leaves its last words, neutralised (no escape byte).
            self.assertIn("pool broken: container", log)
            self.assertIn("no config ?[31mhere", log)
            self.assertNotIn("\x1b", log)
            # Over the rate (2 lines/s, bursts of 4): lines are counted and dropped, then reported.
            for _ in range(20):
                self.assertEqual(srv.request("GET", "/pools/talk/healthz?identifier=talk-1").status, 200)
            time.sleep(0.3)
            self.assertGreaterEqual(metric(srv, 'sandpool_pool_container_log_dropped_lines_total{pool="talk"}'), 10)
            time.sleep(1.2)
            self.assertEqual(srv.request("GET", "/pools/talk/healthz?identifier=talk-1").status, 200)
            deadline = time.monotonic() + 5
            while "dropped: over the log rate]" not in srv.log() and time.monotonic() < deadline:
                time.sleep(0.1)
            self.assertRegex(srv.log(), r"pool talk: container \d+: \[\d+ lines dropped: over the log rate\]")
            self.assertGreaterEqual(metric(srv, 'sandpool_pool_container_log_lines_total{pool="talk"}'), 3)
        finally:
            self.stop(srv)

    def test_api_keys_are_not_forwarded(self):
        srv = start_server(self.tmp.name, pool("keyed"), flags=("--api-key", "k1"))
        try:
            self.assertEqual(srv.request("GET", "/pools/keyed/echo?identifier=key-1").status, 401)
            # With a body too: one 401, answered before the body is read; the connection ends after it.
            c = srv.connect()
            try:
                c.send_request("POST", "/pools/keyed/echo?identifier=key-1", b"x" * 100000,
                               {"Authorization": "Bearer nope"})
                r = c.read_response()
                self.assertEqual(r.status, 401, r)
                self.assertTrue(c.closed_by_peer())
            finally:
                c.close()
            r = srv.request("GET", "/pools/keyed/echo?identifier=key-1", headers={"Authorization": "Bearer k1"})
            self.assertEqual(r.status, 200, r)
            names = {k.lower() for k, _ in json.loads(r.body)["headers"]}
            self.assertNotIn("authorization", names)
        finally:
            self.stop(srv)


class PoolManagement(unittest.TestCase):
    """Pools created and deleted at run time (issue: pool management off the loop thread): the image
    import and the template start run on another thread, deletion returns before the teardown, and
    the races between them end with every sandbox reaped. A fresh image store per test, so the first
    pool of an image imports it (the slow part)."""

    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory(prefix="sp-pm-")
        os.chmod(self.tmp.name, 0o755)
        self.srv = start_server(self.tmp.name, flags=("--shutdown-timeout-ms", "300"))

    def tearDown(self):
        rc = self.srv.stop()
        log = self.srv.log()
        self.srv.proc.stdout.close()
        self.srv.dir.cleanup()
        self.assertEqual(rc, 0, log)
        self.assert_nothing_left()
        self.tmp.cleanup()

    def assert_nothing_left(self):
        # Every sandbox is gone with the server: no overlay or tmpfs of ours is mounted, no process
        # runs from the store.
        with open("/proc/self/mountinfo") as f:
            self.assertNotIn(self.tmp.name, f.read())
        for pid in os.listdir("/proc"):
            if not pid.isdigit():
                continue
            try:
                cwd = os.readlink("/proc/%s/root" % pid)
            except OSError:
                continue
            self.assertNotIn(self.tmp.name, cwd, "process %s still runs in the store" % pid)

    def post_later(self, body):
        """POSTs /pools on a thread; returns (thread, result) with result["r"] the answer or None."""
        import threading
        result = {"r": None, "elapsed": 0.0}

        def run():
            t0 = time.monotonic()
            try:
                result["r"] = self.srv.request("POST", "/pools", json.dumps(body).encode(),
                                               {"Content-Type": "application/json"})
            except (OSError, EOFError):
                result["r"] = None  # cut by the server's shutdown
            result["elapsed"] = time.monotonic() - t0

        t = threading.Thread(target=run)
        t.start()
        return t, result

    def wait_creating(self, name):
        """Until the server shows `name` as being created (its POST not answered yet)."""
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            r = self.srv.request("GET", "/pools/" + name)
            if r.status == 200:
                state = json.loads(r.body)["provisioningState"]
                self.assertEqual(state, "InProgress", "the creation ended before it was seen")
                return
            time.sleep(0.002)
        self.fail("the pool was never being created")

    def test_an_image_that_is_not_there_or_not_an_image_is_the_clients_mistake(self):
        # 400 InvalidPoolSettings with the reason, not 500 PoolStartFailed (found by tests/fuzz/api_fuzz.py).
        junk = os.path.join(self.tmp.name, "junk.tar")
        with open(junk, "wb") as f:
            f.write(b"not a tar archive" * 100)
        for image, reason in (("/nonexistent/image", "no image at that path"), (junk, "image")):
            r = self.srv.request("POST", "/pools", json.dumps(pool("bad", image=image)).encode(),
                                 {"Content-Type": "application/json"})
            self.assertEqual(r.status, 400, r)
            err = json.loads(r.body)["error"]
            self.assertEqual(err["code"], "InvalidPoolSettings")
            self.assertIn(reason, err["message"])
            self.assertEqual(self.srv.request("GET", "/pools/bad").status, 404)

    def test_requests_are_served_while_a_pool_is_created(self):
        t, res = self.post_later(pool("big"))
        latencies = []
        while t.is_alive():
            t0 = time.monotonic()
            self.assertEqual(self.srv.request("GET", "/healthz").status, 200)
            latencies.append(time.monotonic() - t0)
            time.sleep(0.005)
        t.join()
        self.assertEqual(res["r"].status, 201, res["r"])
        self.assertIn("imported", self.srv.log())
        # The import and the first spawn take hundreds of ms; the loop answered throughout.
        self.assertGreater(len(latencies), 3, "the creation took %.3f s" % res["elapsed"])
        self.assertLess(max(latencies), max(0.25, res["elapsed"] / 3), latencies)
        r = self.srv.request("GET", "/pools/big/healthz?identifier=big-1")
        self.assertEqual((r.status, r.body), (200, b"ok"))

    def test_the_same_name_twice_at_once(self):
        t1, r1 = self.post_later(pool("twin"))
        t2, r2 = self.post_later(pool("twin"))
        t1.join()
        t2.join()
        statuses = sorted([r1["r"].status, r2["r"].status])
        self.assertEqual(statuses, [201, 409], (r1["r"], r2["r"]))
        refused = r1["r"] if r1["r"].status == 409 else r2["r"]
        self.assertEqual(refused.header("x-ms-error-code"), "PoolExists")
        r = self.srv.request("GET", "/pools/twin/healthz?identifier=tw-1")
        self.assertEqual(r.status, 200, r)

    def test_delete_while_creating_then_create_again(self):
        t, res = self.post_later(pool("doomed"))
        self.wait_creating("doomed")
        names = [p["name"] for p in json.loads(self.srv.request("GET", "/pools").body)["value"]]
        self.assertIn("doomed", names)
        r = self.srv.request("PATCH", "/pools/doomed", b'{"maxConcurrentSessions": 5}', {"Content-Type": "application/json"})
        self.assertEqual(r.status, 409, r)
        r = self.srv.request("POST", "/pools", json.dumps(pool("doomed")).encode(), {"Content-Type": "application/json"})
        self.assertEqual((r.status, r.header("x-ms-error-code")), (409, "PoolExists"))
        t0 = time.monotonic()
        r = self.srv.request("DELETE", "/pools/doomed")
        self.assertEqual(r.status, 204, r)
        self.assertLess(time.monotonic() - t0, 1.0)
        t.join()
        self.assertEqual(res["r"].status, 409, res["r"])
        self.assertEqual(res["r"].header("x-ms-error-code"), "PoolDeleted")
        self.assertEqual(self.srv.request("GET", "/pools/doomed").status, 404)
        # The name is reusable at once: the new creation waits for the old one's teardown.
        t, res = self.post_later(pool("doomed"))
        t.join()
        self.assertEqual(res["r"].status, 201, res["r"])
        r = self.srv.request("GET", "/pools/doomed/healthz?identifier=dm-1")
        self.assertEqual(r.status, 200, r)

    def test_delete_returns_before_the_teardown_and_the_name_is_reusable(self):
        t, res = self.post_later(pool("re", readySessionInstances=2))
        t.join()
        self.assertEqual(res["r"].status, 201, res["r"])
        self.assertEqual(self.srv.request("PUT", "/pools/re/file/f?identifier=re-1", b"x").status, 201)
        r = self.srv.request("DELETE", "/pools/re")
        self.assertEqual(r.status, 204, r)
        self.assertEqual(self.srv.request("GET", "/pools/re/file/f?identifier=re-1").status, 404)
        t, res = self.post_later(pool("re"))
        t.join()
        self.assertEqual(res["r"].status, 201, res["r"])
        # A new sandbox: the old session's file went with it.
        self.assertEqual(self.srv.request("GET", "/pools/re/file/f?identifier=re-1").status, 404)
        self.assertEqual(metric(self.srv, 'sandpool_pool_sessions{pool="re",state="Allocated"}'), 1)

    def test_shutdown_during_a_creation(self):
        t, res = self.post_later(pool("late", readySessionInstances=2))
        self.wait_creating("late")
        self.srv.signal()
        t.join()
        # Either the creation finished within the shutdown grace, or it was cut: never a crash;
        # tearDown checks the exit code and that no sandbox is left.
        self.assertIn(res["r"].status if res["r"] else None, (201, 503, None), res["r"])

    def test_shutdown_during_a_teardown(self):
        t, res = self.post_later(pool("gone", readySessionInstances=3))
        t.join()
        self.assertEqual(res["r"].status, 201, res["r"])
        self.assertEqual(self.srv.request("GET", "/pools/gone/healthz?identifier=gone-1").status, 200)
        self.assertEqual(self.srv.request("DELETE", "/pools/gone").status, 204)
        self.srv.signal()


if __name__ == "__main__":
    harness.BINARY = os.path.abspath(sys.argv.pop(1))
    MAKE_IMAGES = os.path.abspath(sys.argv.pop(1))
    ok, why = harness.sandboxes_work()
    if not ok:
        print("SKIP: this machine cannot make sandboxes (user namespaces / cgroups): " + why)
        sys.exit(77)
    with tempfile.TemporaryDirectory(prefix="sp-images-") as d:
        IMAGES = d
        subprocess.run(["/usr/bin/python3", MAKE_IMAGES, d], check=True, stdout=subprocess.DEVNULL)
        os.chmod(d, 0o755)
        prog = unittest.main(verbosity=2, exit=False)
    sys.exit(0 if prog.result.wasSuccessful() else 1)
