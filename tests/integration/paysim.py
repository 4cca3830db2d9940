"""
paysim.py - start, talk to and stop paysim (tools/paysim, the PSP
simulator) for the integration tests, and a small HTTP receiver for its
notifications.

Standard library only. One `Paysim` is one paysim process on a free
loopback port with its own temporary directory (data/, stdout.log,
stderr.log); it can be stopped (SIGTERM), killed (SIGKILL) and started again
on the same data directory and port. The process handling is harness.py's
(`harness.Process`, also the base of payd's `Server`): signalled by its own
pid, never by name. The HTTP contract is docs/paysim.md.

Environment:
  PAYSIM_BIN      the binary (default: paysim beside PAYD_BIN, else
                  <repo>/build/paysim; `make build/paysim` builds it)
  PAYD_TEST_SLOW  1: deadlines three times longer
  PAYD_KEEP_TMP   1: keep the temporary directories
"""

import hashlib
import hmac
import http.client
import http.server
import json
import os
import socket
import subprocess
import threading
import time

import harness

_beside_payd = os.path.join(os.path.dirname(os.path.abspath(harness.PAYD_BIN)), "paysim")
PAYSIM_BIN = (os.environ.get("PAYSIM_BIN")
              or (_beside_payd if os.path.exists(_beside_payd) else
                  os.path.join(harness.REPO, "build", "paysim")))

SECRET = "paysim-test-secret"


def sign(secret, timestamp, body):
    """The hex HMAC-SHA256 of "timestamp.body" (body: bytes)."""
    return hmac.new(secret.encode(), str(timestamp).encode() + b"." + body,
                    hashlib.sha256).hexdigest()


def one_shot_request(port, method, path, data=None, headers=None,
                     timeout=harness.HTTP_TIMEOUT_S):
    """One request on a fresh connection, head and body written with one
    sendall(), then the answer read. Unlike http.client (head and body in
    two writes), no write can run into a reset that paysim sends once the
    head is in, so a reset always shows as ConnectionResetError on the read
    and a close without answer as http.client.RemoteDisconnected."""
    lines = ["%s %s HTTP/1.1" % (method, path), "Host: 127.0.0.1:%d" % port]
    hdrs = dict(headers or {})
    if data is not None:
        hdrs.setdefault("Content-Type", "application/json")
        hdrs["Content-Length"] = str(len(data))
    lines += ["%s: %s" % (k, v) for k, v in hdrs.items()]
    wire = ("\r\n".join(lines) + "\r\n\r\n").encode() + (data or b"")
    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    try:
        sock.sendall(wire)
        resp = http.client.HTTPResponse(sock, method=method)
        try:
            resp.begin()
            raw = resp.read()
        finally:
            resp.close()
        return harness.Response(resp.status, resp.headers, raw)
    finally:
        sock.close()


class Paysim(harness.Process):
    """One paysim process (harness.Process: temp dir, logs, stop / kill9 /
    cleanup by pid); its data directory is data/ in the temp dir, and it
    starts again on the port it had. args: extra command-line arguments."""

    program = "paysim"

    def __init__(self, secret=SECRET, notify_url=None, notify_delays=None, threads=None,
                 args=None, name="paysim"):
        super().__init__(name, "paysim-it-")
        self.data_dir = os.path.join(self.tmp, "data")
        self.secret = secret
        self.notify_url = notify_url
        self.notify_delays = notify_delays
        self.threads = threads
        self.extra_args = list(args or [])

    # ---- process -----------------------------------------------------------

    def command(self):
        cmd = [PAYSIM_BIN, "--listen", "127.0.0.1:%d" % self.port, "--data-dir", self.data_dir,
               "--secret", self.secret]
        if self.notify_url:
            cmd += ["--notify-url", self.notify_url]
        if self.notify_delays is not None:
            cmd += ["--notify-delays", self.notify_delays]
        if self.threads:
            cmd += ["--threads", str(self.threads)]
        return cmd + self.extra_args

    def start(self, port=None):
        """Starts paysim (on the port it had, or a free one) and waits until
        it has printed its URL and answers /healthz."""
        if not os.path.exists(PAYSIM_BIN):
            raise AssertionError("%s does not exist: build it with `make build/paysim`"
                                 % PAYSIM_BIN)
        self.spawn(port or self.port)
        want = "http://127.0.0.1:%d" % self.port
        self.wait_serving(lambda: want in self.stdout_text(since_start=True).splitlines(),
                          harness.START_DEADLINE_S, "print " + want)
        r = harness.http_request(self.port, "GET", "/healthz", timeout=5)
        assert r.status == 200, r
        return self

    # ---- HTTP ----------------------------------------------------------------

    def headers_for(self, body, timestamp=None, secret=None):
        ts = int(time.time()) if timestamp is None else timestamp
        return {"Paysim-Timestamp": str(ts),
                "Paysim-Signature": sign(secret or self.secret, ts,
                                         harness.encode_body(body) or b"")}

    def request(self, method, path, body=None, signed=True, timestamp=None, secret=None,
                headers=None, timeout=harness.HTTP_TIMEOUT_S):
        """One request (one_shot_request), signed unless signed=False. A
        dropped connection raises: ConnectionResetError (reset),
        http.client.RemoteDisconnected (closed unanswered), socket.timeout."""
        data = harness.encode_body(body)
        hdrs = {}
        if signed:
            hdrs.update(self.headers_for(data or b"", timestamp, secret))
        hdrs.update(headers or {})
        return one_shot_request(self.port, method, path, data, hdrs, timeout=timeout)

    def charge(self, out_trade_no, amount=1000, currency="CNY", method=None, notify_url=None,
               timeout=harness.HTTP_TIMEOUT_S):
        body = {"out_trade_no": out_trade_no, "amount": amount, "currency": currency}
        if method is not None:
            body["method"] = method
        if notify_url is not None:
            body["notify_url"] = notify_url
        return self.request("POST", "/v1/charges", body, timeout=timeout)

    def get_charge(self, out_trade_no, timeout=harness.HTTP_TIMEOUT_S):
        return self.request("GET", "/v1/charges/" + out_trade_no, timeout=timeout)

    def close_trade(self, out_trade_no):
        return self.request("POST", "/v1/charges/%s/close" % out_trade_no)

    def refund(self, out_trade_no, out_refund_no, amount, notify_url=None,
               timeout=harness.HTTP_TIMEOUT_S):
        body = {"out_trade_no": out_trade_no, "out_refund_no": out_refund_no, "amount": amount}
        if notify_url is not None:
            body["notify_url"] = notify_url
        return self.request("POST", "/v1/refunds", body, timeout=timeout)

    def get_refund(self, out_refund_no):
        return self.request("GET", "/v1/refunds/" + out_refund_no)

    def statement(self, date):
        return self.request("GET", "/v1/statements?date=" + date)

    def set_faults(self, faults):
        r = harness.http_request(self.port, "PUT", "/control/faults", faults, timeout=10)
        assert r.status == 200, "PUT /control/faults %r -> %r" % (faults, r)
        return r.body

    def health(self):
        """GET /healthz: {"status":"ok","waiting":N,"held":M}."""
        r = harness.http_request(self.port, "GET", "/healthz", timeout=10)
        assert r.status == 200, r
        return r.body

    def faults(self):
        return harness.http_request(self.port, "GET", "/control/faults", timeout=10).body

    def journal(self):
        """The witness over the control API: {"charges", "refunds", "closed_trades"}."""
        r = harness.http_request(self.port, "GET", "/control/journal", timeout=30)
        assert r.status == 200, r
        return r.body

    def journal_cli(self):
        """`paysim journal --data-dir DIR` (works with paysim stopped)."""
        cp = subprocess.run([PAYSIM_BIN, "journal", "--data-dir", self.data_dir],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=60)
        assert cp.returncode == 0, cp.stderr.decode()
        return json.loads(cp.stdout)

    def notifications(self):
        r = harness.http_request(self.port, "GET", "/control/notifications", timeout=30)
        assert r.status == 200, r
        return r.body

    def charges_of(self, out_trade_no, journal=None):
        j = journal or self.journal()
        return [c for c in j["charges"] if c["out_trade_no"] == out_trade_no]


class Receiver:
    """An HTTP server on a free loopback port taking paysim's notifications.
    `answers` is a list of (status, body) given to the first requests in
    turn; after it, `default` (200 "success"). Every request is recorded with
    whether its signature verified."""

    def __init__(self, secret=SECRET, answers=None, default=(200, b"success")):
        self.secret = secret
        self.answers = list(answers or [])
        self.default = default
        self.requests = []
        self.lock = threading.Lock()
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self):
                n = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(n)
                ts = self.headers.get("Paysim-Timestamp") or ""
                sig = self.headers.get("Paysim-Signature") or ""
                ok = (ts.isdigit() and abs(int(ts) - time.time()) <= 300 and
                      hmac.compare_digest(sign(receiver.secret, ts, body), sig))
                with receiver.lock:
                    receiver.requests.append({"path": self.path, "body": body,
                                              "json": json.loads(body), "verified": ok,
                                              "headers": dict(self.headers),
                                              "at": time.monotonic()})
                    status, text = (receiver.answers.pop(0) if receiver.answers
                                    else receiver.default)
                self.send_response(status)
                self.send_header("Content-Type", "text/plain")
                self.send_header("Content-Length", str(len(text)))
                self.end_headers()
                self.wfile.write(text)

            def log_message(self, *args):
                pass

        class Server(http.server.ThreadingHTTPServer):
            daemon_threads = True

            def handle_error(self, request, client_address):
                pass  # a client (paysim) that died mid-connection is expected here

        self.server = Server(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.url = "http://127.0.0.1:%d/notify" % self.port
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def received(self):
        with self.lock:
            return list(self.requests)

    def wait_for(self, n, timeout=harness.FINAL_DEADLINE_S, what=None):
        """Waits until n requests have come; returns them."""
        return harness.wait_until(lambda: len(self.received()) >= n and self.received(),
                                  timeout=timeout, what=what or "%d notifications" % n)

    def close(self):
        self.server.shutdown()
        self.server.server_close()
