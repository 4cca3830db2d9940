"""
Observability end to end (issue 4), over HTTP against the real binary:

- /metrics: `promtool check metrics` on a live scrape finds nothing to say,
  and the values move with the traffic (payments, channel calls, requests by
  route, idempotency replays and conflicts, locks, commits, ledger, build).
- X-Request-Id: echoed when valid, replaced when not, generated ids unique.
- Logs on stderr: one JSON line per request (ids, route, status, latency),
  payment transitions, no API key or Authorization value anywhere, the text
  format, and `[log] requests = off`.
- /dashboard/data (shape, since_ms, qps after load) and the dashboard files.
- Alerts pushed to a real Alertmanager (Debian prometheus-alertmanager,
  started here on a free loopback port): the breaker alert fires and
  resolves; an unreachable Alertmanager is logged and payd keeps serving.
- The ledger check: an unbalanced entry written from outside shows in
  payd_ledger_imbalance and fires PaydLedgerImbalance.

Needs /usr/bin/promtool (Debian prometheus) and
/usr/bin/prometheus-alertmanager: `scripts/deps.sh obs` installs both. A
missing one fails the tests that need it (it is not skipped).
"""

import calendar
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time

from harness import (FINAL_DEADLINE_S, gauge, metrics, parse_metrics, scrape, value, SLOW, START_DEADLINE_S, PaydTestCase, fire,
                     free_port, http_request, port_refuses, run_cli, unique, wait_until)

PROMTOOL = shutil.which("promtool") or "/usr/bin/promtool"
ALERTMANAGER = shutil.which("prometheus-alertmanager") or "/usr/bin/prometheus-alertmanager"

GENERATED_ID_RE = re.compile(r"^req_[0-9a-f]{20}$")
RFC3339_MS_RE = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$")
# "TIME LEVEL event name=value ..." (the level is padded to five characters)
TEXT_LINE_RE = re.compile(r"^(\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z) "
                          r"(debug|info|warn|error) +([a-z_]+)((?: [a-z_]+=\S*)*)$")
LEVELS = ("debug", "info", "warn", "error")


def need(path, what):
    if not os.access(path, os.X_OK):
        raise AssertionError("%s not found at %s: run scripts/deps.sh obs" % (what, path))


# ---- /metrics -----------------------------------------------------------------

# ---- stderr -------------------------------------------------------------------

def stderr_lines(server):
    """The lines payd wrote on stderr, without the harness's start markers
    and blank lines."""
    return [l for l in server.stderr_text().splitlines()
            if l.strip() and not l.startswith("===== start ")]


def log_records(server):
    """Every stderr line as JSON; a line that is not a JSON object raises."""
    out = []
    for line in stderr_lines(server):
        try:
            rec = json.loads(line)
        except ValueError:
            raise AssertionError("stderr line is not JSON: %r" % line)
        if not isinstance(rec, dict):
            raise AssertionError("stderr line is not a JSON object: %r" % line)
        out.append(rec)
    return out


def events(server, event, **fields):
    return [r for r in log_records(server) if r.get("event") == event and
            all(r.get(k) == v for k, v in fields.items())]


def wait_event(server, event, timeout=FINAL_DEADLINE_S, **fields):
    return wait_until(lambda: events(server, event, **fields), timeout=timeout,
                      what="a %r log line with %r" % (event, fields))


def text_fields(line):
    """The name=value pairs of a text log line (values without spaces)."""
    m = TEXT_LINE_RE.match(line)
    assert m, "not a text log line: %r" % line
    fields = dict(p.split("=", 1) for p in m.group(4).split())
    return m.group(2), m.group(3), fields


# ---- a few requests -------------------------------------------------------------

def wait_final_counting(test, server, pid):
    """Polls GET /v1/payments/{id} until final; returns (payment, GETs made),
    each GET asserted 200."""
    n = [0]

    def final():
        r = server.get_payment(pid)
        n[0] += 1
        test.assertEqual(r.status, 200, r)
        return r.body if r.body["status"] in ("succeeded", "failed") else None
    p = wait_until(final, what="payment %s to be final" % pid)
    return p, n[0]


def pay_and_wait(test, server, method="ok", expect="succeeded"):
    o = server.create_order()
    r = server.pay(o["id"], method)
    test.assertStatus(r, 202)
    p = server.wait_payment_final(r.body["id"])
    test.assertEqual(p["status"], expect, p)
    return o, p


def dashboard_data(server, since_ms=None):
    path = "/dashboard/data" if since_ms is None else "/dashboard/data?since_ms=%d" % since_ms
    r = server.request("GET", path, key=None)
    assert r.status == 200, r
    assert (r.header("Content-Type") or "").startswith("application/json"), r
    return r.body


def dashboard_alerts(server, name):
    return [a for a in dashboard_data(server)["alerts"] if a["name"] == name]


def breaker_state(server, channel="sandbox"):
    """payd_breaker_state: 0 closed, 1 open, 2 half-open."""
    return gauge(server, "payd_breaker_state", channel=channel)


# =================================================================================

class MetricsTest(PaydTestCase):
    """promtool on a live scrape, and the values following the traffic."""

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        # The store's gauges appear with the monitor's first round.
        wait_until(lambda: gauge(cls.server, "payd_ledger_imbalance") is not None,
                   what="payd_ledger_imbalance to be exposed")

    def traffic(self):
        """Orders and payments of every kind, a replay, a key conflict, a 404."""
        s = self.server
        for method, final in (("ok", "succeeded"), ("declined", "failed"), ("error", "failed")):
            o = s.create_order()
            key = unique("idem")
            r = s.pay(o["id"], method, idem=key)
            self.assertStatus(r, 202)
            self.assertEqual(s.pay(o["id"], method, idem=key).header("Idempotent-Replayed"),
                             "true")
            self.assertEqual(s.pay(o["id"], "slow", idem=key).status, 422)
            self.assertEqual(s.wait_payment_final(r.body["id"])["status"], final)
        self.assertEqual(s.get_order("ord_nope").status, 404)

    def test_promtool_check_metrics_on_a_live_scrape(self):
        need(PROMTOOL, "promtool")
        self.traffic()
        text = scrape(self.server)
        cp = subprocess.run([PROMTOOL, "check", "metrics"], input=text, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=60)
        problems = [l for l in cp.stdout.splitlines() if l.strip()]
        self.assertEqual(problems, [], "promtool check metrics (exit %d) on:\n%s"
                         % (cp.returncode, text[:3000]))
        self.assertEqual(cp.returncode, 0, cp.stdout)

        # Every family the issue asks for is there, with its type.
        _, types = parse_metrics(text)
        want = {
            "payd_build_info": "gauge",
            "payd_http_requests_total": "counter",
            "payd_http_request_duration_seconds": "histogram",
            "payd_payments_accepted_total": "counter",
            "payd_payments_total": "counter",
            "payd_payment_duration_seconds": "histogram",
            "payd_channel_calls_total": "counter",
            "payd_channel_call_duration_seconds": "histogram",
            "payd_breaker_state": "gauge",
            "payd_limiter_admitted_total": "counter",
            "payd_limiter_rejected_total": "counter",
            "payd_inflight": "gauge",
            "payd_inflight_limit": "gauge",
            "payd_queue_depth": "gauge",
            "payd_queue_oldest_age_seconds": "gauge",
            "payd_dead_letters": "gauge",
            "payd_store_commits_total": "counter",
            "payd_store_commit_batch_size": "histogram",
            "payd_store_commit_duration_seconds": "histogram",
            "payd_lock_acquisitions_total": "counter",
            "payd_lock_wait_seconds": "histogram",
            "payd_idempotency_replays_total": "counter",
            "payd_idempotency_conflicts_total": "counter",
            "payd_ledger_imbalance": "gauge",
            "payd_alerts_firing": "gauge",
        }
        self.assertEqual({n: types.get(n) for n in want}, want)
        # Latency buckets from 0.1 ms to 10 s.
        les = {dict(ls).get("le") for (n, ls) in parse_metrics(text)[0]
               if n == "payd_payment_duration_seconds_bucket"}
        self.assertTrue({"0.0001", "10", "+Inf"} <= les, les)

    def test_values_follow_the_traffic(self):
        s = self.server
        before = metrics(s)

        # Two orders, an ok and a declined payment (each with a key), a replay,
        # a conflict, reads, a 404.
        o1, o2 = s.create_order(), s.create_order()
        key = unique("idem")
        r1 = s.pay(o1["id"], "ok", idem=key)
        self.assertStatus(r1, 202)
        replay = s.pay(o1["id"], "ok", idem=key)
        self.assertStatus(replay, 202)
        self.assertEqual(replay.header("Idempotent-Replayed"), "true")
        self.assertEqual(replay.body["id"], r1.body["id"])
        conflict = s.pay(o1["id"], "declined", idem=key)
        self.assertError(conflict, 422, "idempotency_error", "idempotency_key_reused")
        r2 = s.pay(o2["id"], "declined")
        self.assertStatus(r2, 202)
        p1, gets1 = wait_final_counting(self, s, r1.body["id"])
        p2, gets2 = wait_final_counting(self, s, r2.body["id"])
        self.assertEqual((p1["status"], p2["status"]), ("succeeded", "failed"))
        self.assertStatus(s.get_order(o1["id"]), 200)
        self.assertEqual(s.get_order("ord_nope").status, 404)

        after = metrics(s)

        def delta(name, **labels):
            return (value(after, name, **labels) or 0) - (value(before, name, **labels) or 0)

        sandbox = {"channel": "sandbox"}
        self.assertEqual(delta("payd_payments_accepted_total", **sandbox), 2)
        self.assertEqual(delta("payd_payments_total", status="succeeded", **sandbox), 1)
        self.assertEqual(delta("payd_payments_total", status="failed", **sandbox), 1)
        self.assertEqual(delta("payd_payment_duration_seconds_count", **sandbox), 2)
        self.assertEqual(delta("payd_channel_calls_total", outcome="succeeded", **sandbox), 1)
        self.assertEqual(delta("payd_channel_calls_total", outcome="declined", **sandbox), 1)
        for outcome in ("error", "unknown", "not_found"):
            self.assertEqual(delta("payd_channel_calls_total", outcome=outcome, **sandbox), 0,
                             outcome)
        self.assertEqual(delta("payd_channel_call_duration_seconds_count", **sandbox), 2)

        def http(route, method, status):
            return delta("payd_http_requests_total", route=route, method=method,
                         status=str(status))
        self.assertEqual(http("/v1/orders", "POST", 201), 2)
        self.assertEqual(http("/v1/payments", "POST", 202), 3)  # two and the replay
        self.assertEqual(http("/v1/payments", "POST", 422), 1)
        self.assertEqual(http("/v1/payments/{id}", "GET", 200), gets1 + gets2)
        self.assertEqual(http("/v1/orders/{id}", "GET", 200), 1)
        self.assertEqual(http("/v1/orders/{id}", "GET", 404), 1)
        self.assertEqual(http("/metrics", "GET", 200), 1)  # the first scrape
        self.assertEqual(delta("payd_http_request_duration_seconds_count", route="/v1/orders",
                               method="POST"), 2)
        # No label holds a raw path with an id.
        for (n, ls) in after:
            if n == "payd_http_requests_total":
                self.assertNotIn("ord_", dict(ls)["route"])

        self.assertEqual(delta("payd_idempotency_replays_total"), 1)
        self.assertEqual(delta("payd_idempotency_conflicts_total"), 1)
        # The API and the worker both take the order's lock for a payment.
        self.assertGreaterEqual(delta("payd_lock_acquisitions_total", result="acquired"), 2)
        self.assertEqual(delta("payd_lock_acquisitions_total", result="error"), 0)
        self.assertGreaterEqual(delta("payd_lock_wait_seconds_count"),
                                delta("payd_lock_acquisitions_total", result="acquired"))
        # Each creation was acknowledged after its commit, one after the other.
        self.assertGreaterEqual(delta("payd_store_commits_total"), 4)
        self.assertGreaterEqual(delta("payd_store_commit_ops_total"),
                                delta("payd_store_commits_total"))
        self.assertEqual(delta("payd_store_commit_batch_size_count"),
                         delta("payd_store_commits_total"))
        self.assertEqual(value(after, "payd_ledger_imbalance"), 0)
        self.assertEqual(value(after, "payd_alerts_firing"), 0)

        cp = run_cli(["version"])
        version = cp.stdout.split()[-1]
        self.assertEqual(value(after, "payd_build_info", version=version), 1,
                         [k for k in after if k[0] == "payd_build_info"])


# =================================================================================

class RequestIdTest(PaydTestCase):

    def test_given_valid_id_is_echoed(self):
        for rid in ("abc-123_x:y.z", "a", "A" * 64, unique("it")):
            with self.subTest(rid=rid):
                r = self.server.request("GET", "/healthz", key=None,
                                        headers={"X-Request-Id": rid})
                self.assertEqual(r.status, 200)
                self.assertEqual(r.header("X-Request-Id"), rid)
        # Also on a write and on an error answer.
        r = self.server.request("POST", "/v1/orders",
                                {"merchant_order_no": unique("A"), "amount": 1, "currency": "CNY"},
                                headers={"X-Request-Id": "abc-123_x:y.z"})
        self.assertStatus(r, 201)
        self.assertEqual(r.header("X-Request-Id"), "abc-123_x:y.z")
        r = self.server.request("GET", "/v1/orders/ord_nope", headers={"X-Request-Id": "e-1"})
        self.assertEqual((r.status, r.header("X-Request-Id")), (404, "e-1"))

    def test_invalid_id_is_replaced(self):
        for rid in ("a" * 65, "abc def", 'abc"def', "abc/def", "abc,def", "x{}"):
            with self.subTest(rid=rid):
                r = self.server.request("GET", "/healthz", key=None,
                                        headers={"X-Request-Id": rid})
                self.assertEqual(r.status, 200)
                got = r.header("X-Request-Id")
                self.assertNotEqual(got, rid)
                self.assertRegex(got or "", GENERATED_ID_RE)

    def test_every_answer_has_one(self):
        s = self.server
        answers = [
            s.request("GET", "/healthz", key=None),
            s.request("GET", "/metrics", key=None),
            s.request("GET", "/dashboard/data", key=None),
            s.request("GET", "/v1/channels"),
            s.request("GET", "/v1/channels", key=None),             # 401
            s.request("GET", "/v1/orders/ord_nope"),                # 404
            s.request("GET", "/nowhere", key=None),                 # unmatched
            s.request("POST", "/v1/orders", "{not json"),           # 400
        ]
        for r in answers:
            self.assertRegex(r.header("X-Request-Id") or "", GENERATED_ID_RE, r)

    def test_generated_ids_are_unique(self):
        ids = [self.server.request("GET", "/healthz", key=None).header("X-Request-Id")
               for _ in range(20)]
        ids += fire(20, lambda i: http_request(self.server.port, "GET", "/healthz")
                    .header("X-Request-Id"))
        for i in ids:
            self.assertRegex(i, GENERATED_ID_RE)
        self.assertEqual(len(set(ids)), len(ids), ids)


# =================================================================================

class LogTest(PaydTestCase):
    """The default JSON lines."""

    def request_line(self, rid):
        recs = wait_until(lambda: events(self.server, "request", request_id=rid),
                          what="the request line of %s" % rid)
        self.assertEqual(len(recs), 1, recs)
        rec = recs[0]
        self.assertRegex(rec.get("time", ""), RFC3339_MS_RE)
        self.assertIsInstance(rec.get("status"), int, rec)
        self.assertIsInstance(rec.get("latency_ms"), (int, float), rec)
        self.assertNotIsInstance(rec.get("latency_ms"), bool)
        self.assertGreaterEqual(rec["latency_ms"], 0)
        return rec

    def test_one_line_per_request_with_its_ids(self):
        s = self.server
        rid = unique("rid")
        r = s.request("POST", "/v1/orders",
                      {"merchant_order_no": unique("A"), "amount": 500, "currency": "CNY"},
                      headers={"X-Request-Id": rid + "-1"})
        order = self.assertStatus(r, 201)
        rec = self.request_line(rid + "-1")
        mid = rec.get("merchant_id")
        self.assertRegex(mid or "", r"^mch_")
        self.assertEqual((rec["level"], rec["method"], rec["route"], rec["path"], rec["status"],
                          rec["order_id"]),
                         ("info", "POST", "/v1/orders", "/v1/orders", 201, order["id"]))
        self.assertNotIn("payment_id", rec)

        r = s.request("GET", "/v1/orders/" + order["id"], headers={"X-Request-Id": rid + "-2"})
        self.assertStatus(r, 200)
        rec = self.request_line(rid + "-2")
        self.assertEqual((rec["method"], rec["route"], rec["path"], rec["status"],
                          rec["merchant_id"], rec["order_id"]),
                         ("GET", "/v1/orders/{id}", "/v1/orders/" + order["id"], 200, mid,
                          order["id"]))

        r = s.request("POST", "/v1/payments",
                      {"order_id": order["id"], "channel": "sandbox", "method": "ok"},
                      headers={"X-Request-Id": rid + "-3"})
        pay = self.assertStatus(r, 202)
        rec = self.request_line(rid + "-3")
        self.assertEqual((rec["method"], rec["route"], rec["status"], rec["merchant_id"],
                          rec["order_id"], rec["payment_id"]),
                         ("POST", "/v1/payments", 202, mid, order["id"], pay["id"]))

        # A retry with the same Idempotency-Key replays the answer: its line
        # names the same order and payment.
        order2 = self.assertStatus(s.request("POST", "/v1/orders", {
            "merchant_order_no": unique("B"), "amount": 500, "currency": "CNY"}), 201)
        body = {"order_id": order2["id"], "channel": "sandbox", "method": "ok"}
        key = unique("idem")
        first = self.assertStatus(s.request("POST", "/v1/payments", body,
                                            headers={"Idempotency-Key": key}), 202)
        r = s.request("POST", "/v1/payments", body,
                      headers={"Idempotency-Key": key, "X-Request-Id": rid + "-5"})
        self.assertEqual((r.status, r.header("Idempotent-Replayed")), (202, "true"))
        rec = self.request_line(rid + "-5")
        self.assertEqual((rec["order_id"], rec["payment_id"]), (order2["id"], first["id"]))

        s.wait_payment_final(pay["id"])
        r = s.request("GET", "/v1/payments/" + pay["id"], headers={"X-Request-Id": rid + "-4"})
        self.assertStatus(r, 200)
        rec = self.request_line(rid + "-4")
        self.assertEqual((rec["route"], rec["status"], rec["payment_id"]),
                         ("/v1/payments/{id}", 200, pay["id"]))

        # The payment's transition has a line of its own.
        fin = wait_event(s, "payment_finished", payment_id=pay["id"])
        self.assertEqual(len(fin), 1, fin)
        self.assertEqual((fin[0]["order_id"], fin[0]["status"], fin[0]["level"]),
                         (order["id"], "succeeded", "info"))

        # Without a merchant; a generated id; no route.
        r = s.request("GET", "/healthz", key=None)
        rec = self.request_line(r.header("X-Request-Id"))
        self.assertEqual((rec["route"], rec["status"]), ("/healthz", 200))
        for k in ("merchant_id", "order_id", "payment_id"):
            self.assertNotIn(k, rec)
        r = s.request("GET", "/nowhere/" + rid, key=None)
        self.assertEqual(r.status, 404)
        rec = self.request_line(r.header("X-Request-Id"))
        self.assertEqual((rec["route"], rec["status"], rec["path"]),
                         ("unmatched", 404, "/nowhere/" + rid))

    def test_every_line_is_json_with_time_level_event(self):
        pay_and_wait(self, self.server)
        recs = log_records(self.server)
        self.assertTrue(any(r.get("event") == "started" for r in recs), recs[:5])
        for rec in recs:
            self.assertRegex(rec.get("time", ""), RFC3339_MS_RE, rec)
            self.assertIn(rec.get("level"), LEVELS, rec)
            self.assertRegex(rec.get("event", ""), r"^[a-z_]+$", rec)

    def test_no_key_or_authorization_in_the_log(self):
        s = self.server
        key = s.key
        wrong = "sk_" + hashlib.sha256(unique("w").encode()).hexdigest()[:48]
        odd = "Basic " + unique("cred")
        pay_and_wait(self, s)
        o = s.create_order()
        self.assertStatus(s.pay(o["id"], "declined", idem=unique("k")), 202)
        self.assertStatus(s.request("GET", "/v1/balance"), 200)
        self.assertEqual(s.request("GET", "/v1/channels", key=wrong).status, 401)
        self.assertEqual(s.request("GET", "/v1/channels", key=None,
                                   headers={"Authorization": odd}).status, 401)
        self.assertEqual(s.request("GET", "/v1/channels", key=None,
                                   headers={"Authorization": "Bearer"}).status, 401)
        self.assertEqual(s.request("POST", "/v1/orders", "{bad").status, 400)
        wait_until(lambda: len(events(s, "request", status=401)) >= 3, what="the 401 lines")
        text = s.stderr_text()
        for secret in (key, "Bearer " + key, hashlib.sha256(key.encode()).hexdigest(), wrong,
                       odd, "Bearer", "Authorization", "authorization"):
            self.assertNotIn(secret, text)


class LogFormatTest(PaydTestCase):
    """--log-format text, [log] format = text, PAYD_LOG_FORMAT=text; and
    [log] requests = off."""
    shared_server = False

    def check_text(self, **server_kw):
        s = self.start_server(**server_kw)
        rid = unique("txt")
        r = s.request("POST", "/v1/orders",
                      {"merchant_order_no": unique("A"), "amount": 700, "currency": "CNY"},
                      headers={"X-Request-Id": rid})
        order = self.assertStatus(r, 201)
        o, p = pay_and_wait(self, s)
        wait_until(lambda: any(("request_id=%s " % rid) in l for l in stderr_lines(s)),
                   what="the text request line")
        wait_until(lambda: any("payment_finished" in l and p["id"] in l
                               for l in stderr_lines(s)), what="the text payment line")
        seen = {}
        for line in stderr_lines(s):
            with self.assertRaises(ValueError, msg="a JSON line in text mode: %r" % line):
                json.loads(line)
            level, event, fields = text_fields(line)
            seen.setdefault(event, []).append((level, fields))
        self.assertIn("started", seen)
        mine = [f for _, f in seen["request"] if f.get("request_id") == rid]
        self.assertEqual(len(mine), 1, seen["request"])
        f = mine[0]
        self.assertEqual((f.get("method"), f.get("route"), f.get("status"), f.get("order_id")),
                         ("POST", "/v1/orders", "201", order["id"]))
        self.assertRegex(f.get("merchant_id", ""), r"^mch_")
        float(f["latency_ms"])
        fin = [f for _, f in seen["payment_finished"] if f.get("payment_id") == p["id"]]
        self.assertEqual(len(fin), 1, seen["payment_finished"])
        self.assertEqual((fin[0]["order_id"], fin[0]["status"]), (o["id"], "succeeded"))
        self.assertNotIn(s.key, s.stderr_text())

    def test_text_by_flag(self):
        self.check_text(args=["--log-format", "text"])

    def test_text_by_config(self):
        self.check_text(config="[log]\nformat = text\n")

    def test_text_by_env(self):
        self.check_text(env={"PAYD_LOG_FORMAT": "text"})

    def check_requests_off(self, **server_kw):
        s = self.start_server(**server_kw)
        s.create_order()
        self.assertEqual(s.request("GET", "/v1/orders/ord_nope").status, 404)
        self.assertEqual(s.request("GET", "/healthz", key=None).status, 200)
        _, p = pay_and_wait(self, s)
        wait_event(s, "payment_finished", payment_id=p["id"])
        self.assertEqual(events(s, "request"), [])
        self.assertTrue(events(s, "started"))

    def test_request_lines_off_by_config(self):
        self.check_requests_off(config="[log]\nrequests = off\n")

    def test_request_lines_off_by_env(self):
        self.check_requests_off(env={"PAYD_LOG_REQUESTS": "off"})


# =================================================================================

SERIES_NAMES = {"t_ms", "qps", "p50_ms", "p99_ms", "error_ratio", "succeeded_per_s",
                "failed_per_s", "accepted_per_s", "rejected_per_s", "queue_depth"}


class DashboardTest(PaydTestCase):

    def series_ok(self, body):
        series = body["series"]
        self.assertEqual(set(series), SERIES_NAMES)
        lengths = {k: len(v) for k, v in series.items()}
        self.assertEqual(len(set(lengths.values())), 1, lengths)
        t = series["t_ms"]
        for a, b in zip(t, t[1:]):
            self.assertGreater(b, a, t)
        return series

    def test_data_shape_and_since(self):
        s = self.server
        body = wait_until(lambda: (lambda b: b if len(b["series"]["t_ms"]) >= 4 else None)(
            dashboard_data(s)), what="four one-second points")
        series = self.series_ok(body)
        t = series["t_ms"]
        steps = sorted(b - a for a, b in zip(t, t[1:]))
        self.assertTrue(900 <= steps[len(steps) // 2] <= 1100, steps)
        for d in steps:
            self.assertTrue(500 <= d <= 2500, steps)
        self.assertEqual(body["interval_ms"], 1000)
        self.assertGreaterEqual(body["now_ms"], t[-1])
        self.assertLess(abs(body["now_ms"] - time.time() * 1000), 60000)
        self.assertEqual(set(body["payments"]), {"accepted", "succeeded", "failed", "processing"})
        self.assertEqual(body["breakers"], [{"channel": "sandbox", "state": "closed"}])
        self.assertEqual(sorted(l["limiter"] for l in body["limiters"]),
                         ["global", "inflight", "merchant"])
        self.assertEqual(set(body["queue"]), {"depth", "oldest_age_s", "dead_letters"})
        self.assertEqual(set(body["inflight"]), {"current", "limit"})
        self.assertEqual(body["alerts"], [])

        # since_ms: only the newer points.
        cut = t[-2]
        newer = self.series_ok(dashboard_data(s, since_ms=cut))
        self.assertTrue(newer["t_ms"], newer)
        self.assertTrue(all(x > cut for x in newer["t_ms"]), (cut, newer["t_ms"]))
        self.assertIn(t[-1], newer["t_ms"])
        later = wait_until(lambda: self.series_ok(dashboard_data(s, since_ms=t[-1]))["t_ms"],
                           what="a point after %d" % t[-1])
        self.assertTrue(all(x > t[-1] for x in later), later)
        future = self.series_ok(dashboard_data(s, since_ms=body["now_ms"] + 3600 * 1000))
        self.assertEqual(future["t_ms"], [])

    def test_qps_after_load(self):
        s = self.server
        t0 = int(time.time() * 1000)
        n = 30
        for _ in range(n - 2):
            self.assertStatus(s.request("GET", "/v1/channels"), 200)
        pay_and_wait(self, s)  # 2 more /v1 requests, and the GETs of the wait

        def loaded():
            series = self.series_ok(dashboard_data(s, since_ms=t0 - 1000))
            return (series if sum(series["qps"]) >= n * 0.5 and
                    sum(series["accepted_per_s"]) > 0 and
                    sum(series["succeeded_per_s"]) > 0 else None)
        series = wait_until(loaded, what="the load to show in /dashboard/data")
        busy = [i for i, q in enumerate(series["qps"]) if q > 0]
        self.assertTrue(busy)
        for i in busy:
            self.assertIsNotNone(series["p50_ms"][i], series)
            self.assertIsNotNone(series["p99_ms"][i], series)
            self.assertGreaterEqual(series["p99_ms"][i], series["p50_ms"][i])
            self.assertEqual(series["error_ratio"][i], 0, series)
        body = dashboard_data(s)
        self.assertGreaterEqual(body["payments"]["accepted"], 1)
        self.assertGreaterEqual(body["payments"]["succeeded"], 1)
        lim = {l["limiter"]: l for l in body["limiters"]}
        self.assertGreaterEqual(lim["global"]["admitted"], n)

    def test_bad_since_ms(self):
        for bad in ("abc", "-1", "1.5", "", "12abc", "0x10", "5%20x", "+5", "%205", "-0",
                    "%0A5", "99999999999999999999"):
            with self.subTest(since_ms=bad):
                r = self.server.request("GET", "/dashboard/data?since_ms=" + bad, key=None)
                self.assertError(r, 400, "invalid_request_error", "parameter_invalid",
                                 param="since_ms")

    def test_files(self):
        s = self.server
        r = s.request("GET", "/dashboard", key=None)
        self.assertEqual(r.status, 200)
        self.assertTrue((r.header("Content-Type") or "").startswith("text/html"), r.headers)
        self.assertIn("<html", r.raw.decode("utf-8").lower())
        self.assertIn("uPlot.iife.min.js", r.raw.decode("utf-8"))
        r = s.request("GET", "/dashboard/uPlot.iife.min.js", key=None)
        self.assertEqual(r.status, 200)
        self.assertRegex(r.header("Content-Type") or "", r"^(text|application)/javascript")
        self.assertGreater(len(r.raw), 10000)
        self.assertIn(b"uPlot", r.raw)
        r = s.request("GET", "/dashboard/nope", key=None)
        self.assertError(r, 404, "not_found", "resource_missing")


# =================================================================================

class Alertmanager:
    """One prometheus-alertmanager in a temporary directory on a free
    loopback port: one receiver without any notifier, no clustering.
    Stopped by its pid."""

    CONFIG = ("route:\n  receiver: blackhole\n  group_wait: 1s\n  group_interval: 1s\n"
              "  repeat_interval: 1h\nreceivers:\n  - name: blackhole\n")

    def __init__(self):
        self.tmp = tempfile.mkdtemp(prefix="payd-am-")
        self.config = os.path.join(self.tmp, "alertmanager.yml")
        with open(self.config, "w") as f:
            f.write(self.CONFIG)
        self.log_path = os.path.join(self.tmp, "alertmanager.log")
        self.proc = None
        self.port = None

    @property
    def url(self):
        return "http://127.0.0.1:%d" % self.port

    def start(self):
        need(ALERTMANAGER, "prometheus-alertmanager")
        for _ in range(3):  # a free port may be taken before it binds
            self.port = free_port()
            log = open(self.log_path, "ab")
            try:
                self.proc = subprocess.Popen(
                    [ALERTMANAGER, "--config.file=" + self.config,
                     "--storage.path=" + os.path.join(self.tmp, "data"),
                     "--web.listen-address=127.0.0.1:%d" % self.port,
                     "--cluster.listen-address="],
                    stdin=subprocess.DEVNULL, stdout=log, stderr=log, cwd=self.tmp,
                    start_new_session=True)
            finally:
                log.close()
            end = time.monotonic() + START_DEADLINE_S
            while self.proc.poll() is None and time.monotonic() < end:
                try:
                    if http_request(self.port, "GET", "/-/ready", timeout=2).status == 200:
                        return self
                except OSError:
                    pass
                time.sleep(0.1)
            self.stop(remove=False)
        raise AssertionError("Alertmanager did not become ready:\n" + self.log_tail())

    def alerts(self):
        """GET /api/v2/alerts: the alerts it holds that are not resolved."""
        r = http_request(self.port, "GET", "/api/v2/alerts", timeout=10)
        assert r.status == 200, r
        return r.body

    def named(self, name):
        return [a for a in self.alerts() if a["labels"].get("alertname") == name]

    def log_tail(self, limit=3000):
        try:
            with open(self.log_path, errors="replace") as f:
                return f.read()[-limit:]
        except OSError:
            return ""

    def stop(self, remove=True):
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        if remove and os.environ.get("PAYD_KEEP_TMP") != "1":
            shutil.rmtree(self.tmp, True)


class AlertmanagerTest(PaydTestCase):
    shared_server = False
    OPEN_S = 10 if SLOW else 4  # long enough to see the alert before half-open

    def setUp(self):
        super().setUp()
        self.am = None

    def server_logs(self):
        text = super().server_logs()
        if self.am is not None:
            text += "\n--- alertmanager (%s) ---\n%s" % (self.am.log_path, self.am.log_tail())
        return text

    def start_am(self):
        self.am = Alertmanager()
        self.addCleanup(self.am.stop)
        return self.am.start()

    def test_breaker_alert_fires_and_resolves_in_alertmanager(self):
        am = self.start_am()
        self.assertEqual(am.alerts(), [])
        s = self.start_server(env={"PAYD_ALERTS_ALERTMANAGER_URL": am.url,
                                   "PAYD_BREAKER_MIN_CALLS": "5",
                                   "PAYD_WORKER_MAX_ATTEMPTS": "1",
                                   "PAYD_BREAKER_OPEN_S": str(self.OPEN_S)})
        self.assertEqual(breaker_state(s), 0)

        # Errors until the breaker opens (the fifth failure trips it).
        failed = 0
        for _ in range(12):
            o = s.create_order()
            r = s.pay(o["id"], "error")
            if r.status == 503:
                self.assertError(r, 503, "service_degraded", "channel_unavailable")
                break
            self.assertStatus(r, 202)
            p = s.wait_payment_final(r.body["id"])
            self.assertEqual((p["status"], p["failure"]["code"]), ("failed", "channel_error"))
            failed += 1
            if breaker_state(s) == 1:
                break
        self.assertEqual(failed, 5)
        self.assertEqual(breaker_state(s), 1)
        # While it is open a payment is refused with a 503, whose request
        # line is a warning.
        o = s.create_order()
        r = s.request("POST", "/v1/payments",
                      {"order_id": o["id"], "channel": "sandbox", "method": "ok"},
                      headers={"X-Request-Id": "refused-" + o["id"]})
        self.assertError(r, 503, "service_degraded", "channel_unavailable")
        line = wait_event(s, "request", request_id="refused-" + o["id"])
        self.assertEqual((line[0]["status"], line[0]["level"]), (503, "warn"))

        # Firing: on the dashboard, in the log, in Alertmanager.
        firing = wait_until(lambda: [a for a in dashboard_alerts(s, "PaydBreakerOpen")
                                     if a["state"] == "firing"],
                            what="PaydBreakerOpen firing on the dashboard")
        self.assertEqual((firing[0]["labels"], firing[0]["severity"]),
                         ({"channel": "sandbox"}, "ticket"))
        got = wait_until(lambda: am.named("PaydBreakerOpen"),
                         what="PaydBreakerOpen in Alertmanager")
        self.assertEqual(len(got), 1, got)
        a = got[0]
        self.assertEqual(a["labels"], {"alertname": "PaydBreakerOpen", "channel": "sandbox",
                                       "service": "payd", "severity": "ticket",
                                       "instance": "127.0.0.1:%d" % s.port})
        self.assertIn("sandbox", a["annotations"].get("summary", ""))
        self.assertEqual(a["status"]["state"], "active")
        starts = calendar.timegm(time.strptime(a["startsAt"][:19], "%Y-%m-%dT%H:%M:%S"))
        self.assertLess(abs(starts - time.time()), 120, a)
        self.assertTrue(a["generatorURL"].startswith("http://127.0.0.1:%d/" % s.port), a)
        rec = wait_event(s, "alert_firing", alert="PaydBreakerOpen")
        self.assertEqual(len(rec), 1, rec)
        self.assertEqual((rec[0]["level"], rec[0]["channel"], rec[0]["severity"]),
                         ("warn", "sandbox", "ticket"))
        self.assertIn("sandbox", rec[0]["summary"])
        self.assertGreaterEqual(gauge(s, "payd_alerts_firing"), 1)

        # After open_s, half-open: ok payments are the probes that close it.
        wait_until(lambda: breaker_state(s) == 2, timeout=self.OPEN_S + FINAL_DEADLINE_S,
                   what="the breaker to be half-open")
        for _ in range(10):
            pay_and_wait(self, s, "ok")
            if breaker_state(s) == 0:
                break
        self.assertEqual(breaker_state(s), 0)
        wait_event(s, "breaker_closed", channel="sandbox")

        # Resolved: gone from Alertmanager's list (its endsAt was minutes
        # ahead, so only the resolving push can have ended it), logged, and
        # off the dashboard.
        wait_until(lambda: not am.named("PaydBreakerOpen"),
                   what="PaydBreakerOpen to leave Alertmanager's active alerts")
        rec = wait_event(s, "alert_resolved", alert="PaydBreakerOpen")
        self.assertEqual((len(rec), rec[0]["channel"]), (1, "sandbox"), rec)
        self.assertEqual(dashboard_alerts(s, "PaydBreakerOpen"), [])
        self.assertEqual(events(s, "alert_push_failed"), [])
        self.assertNotIn(am.url, s.stderr_text())

    def test_unreachable_alertmanager_is_logged_and_payd_serves_on(self):
        port = free_port()
        self.assertTrue(port_refuses(port))
        url = "http://127.0.0.1:%d" % port
        # A rule of our own that fires at once: the oldest queued payment is
        # always older than -1 s.
        s = self.start_server(config="[alerts]\nalertmanager_url = %s\n\n"
                                     "[alert.ItAlwaysFires]\nkind = queue_age\n"
                                     "threshold = -1\nseverity = info\n" % url)
        rec = wait_event(s, "alert_firing", alert="ItAlwaysFires")
        self.assertEqual(rec[0]["severity"], "info")
        failed = wait_event(s, "alert_push_failed")
        self.assertEqual(failed[0]["level"], "warn")
        self.assertTrue(failed[0].get("error") or failed[0].get("status"), failed[0])
        self.assertNotIn(url, s.stderr_text())
        self.assertNotIn("127.0.0.1:%d" % port, s.stderr_text())

        # payd serves on.
        self.assertEqual(s.request("GET", "/healthz", key=None).status, 200)
        self.assertEqual(s.request("GET", "/readyz", key=None).status, 200)
        pay_and_wait(self, s, "ok")
        self.assertTrue([a for a in dashboard_alerts(s, "ItAlwaysFires")
                         if a["state"] == "firing"])
        self.assertGreaterEqual(gauge(s, "payd_alerts_firing"), 1)
        self.assertTrue(s.running())


# =================================================================================

class LedgerCheckTest(PaydTestCase):
    server_env = {"PAYD_ALERTS_LEDGER_CHECK_S": "1"}

    def test_unbalanced_entry_shows_and_fires(self):
        s = self.server
        for _ in range(2):
            pay_and_wait(self, s, "ok")
        wait_until(lambda: gauge(s, "payd_ledger_imbalance") == 0,
                   what="payd_ledger_imbalance 0 after the payments")
        self.assertEqual(dashboard_alerts(s, "PaydLedgerImbalance"), [])
        self.assertEqual(s.db_scalar("SELECT sum(amount) FROM ledger_entries"), 0)

        # One entry without its counterpart, written behind payd's back.
        transfer = unique("corrupt")
        self.assertEqual(s.db_exec(
            "INSERT INTO ledger_entries (transfer_id, account, amount, currency, created_ms) "
            "VALUES (?, ?, ?, ?, ?)",
            (transfer, "merchant:mch_it_corruption", 777, "CNY", int(time.time() * 1000))), 1)

        wait_until(lambda: gauge(s, "payd_ledger_imbalance") == 777,
                   what="payd_ledger_imbalance 777")
        firing = wait_until(lambda: [a for a in dashboard_alerts(s, "PaydLedgerImbalance")
                                     if a["state"] == "firing"],
                            what="PaydLedgerImbalance firing on the dashboard")
        self.assertEqual(firing[0]["severity"], "page")
        self.assertIn("777", firing[0]["summary"])
        rec = wait_event(s, "alert_firing", alert="PaydLedgerImbalance")
        self.assertEqual((rec[0]["level"], rec[0]["severity"]), ("warn", "page"))
        self.assertGreaterEqual(gauge(s, "payd_alerts_firing"), 1)

        # Repaired: back to 0, resolved.
        self.assertEqual(s.db_exec("DELETE FROM ledger_entries WHERE transfer_id = ?",
                                   (transfer,)), 1)
        wait_until(lambda: gauge(s, "payd_ledger_imbalance") == 0,
                   what="payd_ledger_imbalance back to 0")
        wait_event(s, "alert_resolved", alert="PaydLedgerImbalance")
        wait_until(lambda: dashboard_alerts(s, "PaydLedgerImbalance") == [],
                   what="PaydLedgerImbalance off the dashboard")
