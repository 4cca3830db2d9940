"""
Protection under overload and channel failure, over HTTP against the real
binary: rate limits (429 + Retry-After, nothing written), the in-flight
limit (503 overloaded), circuit breakers (open -> 503 in the caller's
language, half-open probes, closed again), fallback routing at the API and
in the worker, pacing of a channel to its rate, and the admin view with its
persisted run-time changes.
"""

import json
import threading
import time

from harness import (FINAL_DEADLINE_S, SLOW, PaydTestCase, db_query, fire, http_request,
                     unique, wait_until)


def channel_status(server, name="sandbox"):
    r = server.request("GET", "/v1/channels")
    assert r.status == 200, r
    for ch in r.body["data"]:
        if ch["id"] == name:
            return ch["status"]
    raise AssertionError("no channel %s in %r" % (name, r))


def guards_view(server):
    r = http_request(server.port, "GET", "/admin/guards")
    assert r.status == 200, r
    return r.body


def channel_view(server, name="sandbox"):
    for ch in guards_view(server)["channels"]:
        if ch["id"] == name:
            return ch
    raise AssertionError("no channel %s in the admin view" % name)


def trip_with_errors(test, server, count, channel="sandbox"):
    """Pays `count` orders with method error one after the other, each
    waited for, so the breaker sees exactly one failed call per accepted
    payment. Returns (accepted, refused_503)."""
    accepted = refused = 0
    for _ in range(count):
        order = server.create_order()
        r = server.pay(order["id"], method="error", channel=channel)
        if r.status == 503:
            test.assertError(r, 503, "service_degraded", "channel_unavailable")
            refused += 1
            continue
        test.assertStatus(r, 202)
        accepted += 1
        p = server.wait_payment_final(r.body["id"])
        test.assertEqual(p["status"], "failed", p)
        test.assertEqual(p["failure"]["code"], "channel_error", p)
    return accepted, refused


def log_events(server, event):
    out = []
    for line in server.stderr_text().splitlines():
        if line.startswith("{"):
            try:
                rec = json.loads(line)
            except ValueError:
                continue
            if rec.get("event") == event:
                out.append(rec)
    return out


class MerchantRateLimitTest(PaydTestCase):
    server_env = {"PAYD_LIMITS_MERCHANT_RPS": "20", "PAYD_LIMITS_MERCHANT_BURST": "20"}

    def test_lets_about_n_per_second_through(self):
        """Four clients as fast as they can for 3 s: about burst + 20/s get
        through, the rest are 429 with a whole-second Retry-After."""
        statuses = []
        lock = threading.Lock()
        stop = time.monotonic() + 3.0
        start = time.monotonic()

        def client(_):
            while time.monotonic() < stop:
                r = self.server.request("GET", "/v1/channels")
                with lock:
                    statuses.append((r.status, r.header("Retry-After"), r))

        fire(4, client)
        elapsed = time.monotonic() - start
        ok = sum(1 for s, _, _ in statuses if s == 200)
        limited = [(ra, r) for s, ra, r in statuses if s == 429]
        self.assertEqual(ok + len(limited), len(statuses), "only 200 and 429 expected")
        expected = 20 + 20 * elapsed
        self.assertGreater(len(statuses), expected * 1.5, "the clients did not press hard enough")
        self.assertGreaterEqual(ok, expected * 0.85, (ok, expected))
        self.assertLessEqual(ok, expected * 1.15, (ok, expected))
        for ra, r in limited:
            self.assertError(r, 429, "rate_limited", "rate_limited")
            self.assertEqual(ra, "1", "at 20/s the next token is due within a second")

    def test_other_merchant_has_its_own_bucket(self):
        key = self.server.add_merchant(unique("m"))
        # Empty the demo merchant's bucket.
        while self.server.request("GET", "/v1/channels").status != 429:
            pass
        self.assertEqual(self.server.request("GET", "/v1/channels", key=key).status, 200)

    def test_limited_write_changes_nothing(self):
        before = self.server.table_counts()  # first: reading them takes time
        while self.server.request("GET", "/v1/channels").status != 429:
            pass
        r = self.server.request("POST", "/v1/orders",
                                {"merchant_order_no": unique("L"), "amount": 100,
                                 "currency": "CNY"})
        self.assertError(r, 429, "rate_limited", "rate_limited")
        self.assertEqual(self.server.table_counts(), before)


class RetryAfterTest(PaydTestCase):
    shared_server = False
    env = {"PAYD_LIMITS_MERCHANT_RPS": "0.5", "PAYD_LIMITS_MERCHANT_BURST": "1"}

    def setUp(self):
        super().setUp()
        self.server = self.start_server(env=self.env)

    def test_retry_after_is_when_a_token_is_due(self):
        """One token every 2 s: the second request is told 2 s, and after
        waiting that long it goes through."""
        self.assertEqual(self.server.request("GET", "/v1/channels").status, 200)
        r = self.server.request("GET", "/v1/channels")
        self.assertError(r, 429, "rate_limited", "rate_limited")
        self.assertEqual(r.header("Retry-After"), "2")
        time.sleep(int(r.header("Retry-After")))
        self.assertEqual(self.server.request("GET", "/v1/channels").status, 200)

    def test_chinese_message(self):
        self.server.request("GET", "/v1/channels")
        r = self.server.request("GET", "/v1/channels",
                                headers={"Accept-Language": "zh-CN,zh;q=0.9,en;q=0.5"})
        err = self.assertError(r, 429, "rate_limited", "rate_limited")
        self.assertIn("请求", err["message"])
        r = self.server.request("GET", "/v1/channels", headers={"Accept-Language": "en,zh;q=0.5"})
        err = self.assertError(r, 429, "rate_limited", "rate_limited")
        self.assertIn("Too many requests", err["message"])


class GlobalRateLimitTest(PaydTestCase):
    server_env = {"PAYD_LIMITS_GLOBAL_RPS": "1", "PAYD_LIMITS_GLOBAL_BURST": "5"}

    def test_global_limit_counts_every_v1_request(self):
        key = self.server.add_merchant(unique("g"))
        answers = [self.server.request("GET", "/v1/channels", key=k).status
                   for k in [self.server.key, key] * 4]
        self.assertEqual(answers[:5], [200] * 5, answers)
        self.assertEqual(answers[5:], [429] * 3, answers)
        # Unauthenticated /v1/ requests count too; the probes do not.
        self.assertEqual(self.server.request("GET", "/v1/channels", key=None).status, 429)
        self.assertEqual(http_request(self.server.port, "GET", "/healthz").status, 200)


class InflightLimitTest(PaydTestCase):
    server_env = {"PAYD_LIMITS_ADAPTIVE": "off", "PAYD_LIMITS_MAX_INFLIGHT": "1"}

    def test_over_the_limit_is_503_and_writes_nothing(self):
        orders_before = self.server.db_scalar("SELECT count(*) FROM orders")
        n = 80  # enough at once that some overlap even on a busy machine
        results = fire(n, lambda i: self.server.request(
            "POST", "/v1/orders", {"merchant_order_no": unique("F%d" % i), "amount": 100,
                                   "currency": "CNY"}))
        created = [r for r in results if r.status == 201]
        shed = [r for r in results if r.status == 503]
        self.assertEqual(len(created) + len(shed), n, results)
        self.assertGreater(len(created), 0)
        self.assertGreater(len(shed), 0, "%d writes at once with one place in flight" % n)
        for r in shed:
            self.assertError(r, 503, "service_degraded", "overloaded")
            self.assertEqual(r.header("Retry-After"), "1")
        self.assertEqual(self.server.db_scalar("SELECT count(*) FROM orders"),
                         orders_before + len(created))
        view = guards_view(self.server)["inflight"]
        self.assertEqual(view["limit"], 1)
        self.assertGreaterEqual(view["rejected"], len(shed))
        # A request gives its place back when it ends, which is just after
        # its answer was sent: the last one may still be ending.
        wait_until(lambda: guards_view(self.server)["inflight"]["in_flight"] == 0,
                   what="the last place to be given back")

    def test_reads_are_not_limited(self):
        results = fire(20, lambda i: self.server.request("GET", "/v1/channels"))
        self.assertEqual([r.status for r in results], [200] * 20)


class BreakerTest(PaydTestCase):
    shared_server = False
    env = {"PAYD_BREAKER_OPEN_S": "2", "PAYD_WORKER_MAX_ATTEMPTS": "1"}

    def setUp(self):
        super().setUp()
        self.server = self.start_server(env=self.env)

    def test_errors_open_it_and_probes_close_it(self):
        self.assertEqual(channel_status(self.server), "up")
        accepted, refused = trip_with_errors(self, self.server, 30)
        # min_calls is 20: the 20th failure trips it, the rest are refused.
        self.assertEqual((accepted, refused), (20, 10))
        self.assertEqual(channel_status(self.server), "down")

        # A new payment is refused at once, in the caller's language, and
        # nothing is written.
        order = self.server.create_order()
        before = self.server.table_counts()
        r = self.server.pay(order["id"])
        err = self.assertError(r, 503, "service_degraded", "channel_unavailable")
        self.assertIn(r.header("Retry-After"), ("1", "2"))
        self.assertIn("payment method", err["message"])
        r = self.server.request("POST", "/v1/payments",
                                {"order_id": order["id"], "channel": "sandbox", "method": "ok"},
                                headers={"Accept-Language": "zh"})
        err = self.assertError(r, 503, "service_degraded", "channel_unavailable")
        self.assertIn("支付方式暂时不可用", err["message"])
        self.assertEqual(self.server.table_counts(), before)

        # After open_s: half-open, payments are taken and serve as probes;
        # three successes close it.
        wait_until(lambda: channel_status(self.server) == "degraded", timeout=10,
                   what="half-open after open_s")
        for _ in range(3):
            o = self.server.create_order()
            r = self.server.pay(o["id"])
            self.assertStatus(r, 202)
            p = self.server.wait_payment_final(r.body["id"])
            self.assertEqual(p["status"], "succeeded", p)
        wait_until(lambda: channel_status(self.server) == "up", timeout=10, what="closed")

        moves = [(e["from"], e["to"]) for e in log_events(self.server, "breaker_opened") +
                 log_events(self.server, "breaker_half_open") +
                 log_events(self.server, "breaker_closed")]
        self.assertEqual(sorted(moves), sorted([("closed", "open"), ("open", "half_open"),
                                                ("half_open", "closed")]))
        view = channel_view(self.server)
        self.assertEqual(view["breaker"]["state"], "closed")
        self.assertEqual(view["breaker"]["transitions"], 3)

    def test_declines_do_not_count(self):
        for _ in range(25):
            o = self.server.create_order()
            r = self.server.pay(o["id"], method="declined")
            self.assertStatus(r, 202)
            self.server.wait_payment_final(r.body["id"])
        self.assertEqual(channel_view(self.server)["breaker"]["state"], "closed")


class FallbackTest(PaydTestCase):
    server_config = """
[breaker]
min_calls = 5
open_s = 3
[worker]
max_attempts = 1
[channel.sandbox]
fallback = backup
timeout_ms = 2000
[channel.backup]
"""

    def backup_serials(self):
        rows, _ = db_query(self.server.data_dir + "/sandbox-backup.db",
                           "SELECT serial_no FROM charges")
        return {r[0] for r in rows}

    def test_api_and_worker_route_to_the_fallback(self):
        accepted, refused = trip_with_errors(self, self.server, 5)
        self.assertEqual((accepted, refused), (5, 0))
        self.assertEqual(channel_status(self.server, "sandbox"), "down")
        self.assertEqual(channel_status(self.server, "backup"), "up")

        # The API: a payment for the open channel goes to the fallback.
        o = self.server.create_order()
        r = self.server.pay(o["id"])
        self.assertStatus(r, 202)
        self.assertEqual(r.body["channel"], "backup")
        p = self.server.wait_payment_final(r.body["id"])
        self.assertEqual((p["status"], p["channel"]), ("succeeded", "backup"))
        self.assertIn(p["serial_no"], self.backup_serials())

        # The worker: payments accepted for sandbox while it is half-open,
        # after its three probes were taken (calls that hang until the
        # timeout), move to the fallback instead of waiting.
        wait_until(lambda: channel_status(self.server, "sandbox") == "degraded", timeout=10,
                   what="half-open")
        for _ in range(3):
            o = self.server.create_order()
            self.assertStatus(self.server.pay(o["id"], method="unknown"), 202)
        wait_until(lambda: channel_view(self.server)["breaker"].get("probes_issued") == 3,
                   timeout=10, what="three probes in flight")
        moved = []
        for _ in range(4):
            o = self.server.create_order()
            r = self.server.pay(o["id"])
            self.assertStatus(r, 202)
            self.assertEqual(r.body["channel"], "sandbox")
            moved.append(r.body)
        sandbox_serials = set(self.server.succeeded_charge_serials())
        for accepted_p in moved:
            p = self.server.wait_payment_final(accepted_p["id"])
            self.assertEqual((p["status"], p["channel"]), ("succeeded", "backup"), p)
            self.assertIn(p["serial_no"], self.backup_serials())
            self.assertNotIn(p["serial_no"], sandbox_serials)
        self.assertEqual(len(log_events(self.server, "payment_rerouted")), 4)
        # The ledger credits the channel that charged.
        n = self.server.db_scalar(
            "SELECT count(*) FROM ledger_entries WHERE account = 'clearing:backup'")
        self.assertEqual(n, 5)


class PacingTest(PaydTestCase):
    server_env = {"PAYD_CHANNEL_SANDBOX_RATE": "25"}

    def test_calls_leave_at_the_channel_rate(self):
        n = 150
        orders = [self.server.create_order() for _ in range(n)]
        results = fire(16, lambda i: [self.server.pay(o["id"]) for o in orders[i::16]])
        accepted = [r.body for rs in results for r in rs if r.status == 202]
        self.assertEqual(len(accepted), n)
        for p in accepted:
            got = self.server.wait_payment_final(p["id"], timeout=FINAL_DEADLINE_S * 2)
            self.assertEqual(got["status"], "succeeded", got)
        times = sorted(c["created_ms"] for c in self.server.charges())
        self.assertEqual(len(times), n)
        rate = (n - 1) / ((times[-1] - times[0]) / 1000.0)
        self.assertGreaterEqual(rate, 25 * 0.9, rate)
        self.assertLessEqual(rate, 25 * 1.1, rate)
        # No second has more than its share (plus one for the boundary).
        per_second = {}
        for t in times:
            per_second[t // 1000] = per_second.get(t // 1000, 0) + 1
        self.assertLessEqual(max(per_second.values()), 26, per_second)
        pacer = channel_view(self.server)["pacer"]
        self.assertGreater(pacer["deferred"], 0, "150 at once must overflow a 1 s wait bound")


class AdminGuardsTest(PaydTestCase):
    def test_view_change_and_restart(self):
        view = guards_view(self.server)
        self.assertEqual(set(view), {"global", "merchant", "inflight", "channels"})
        self.assertEqual(view["merchant"]["rate"], 0)
        self.assertEqual(view["inflight"]["max_inflight"], 1000)
        self.assertTrue(view["inflight"]["adaptive"])
        self.assertEqual([c["id"] for c in view["channels"]], ["sandbox"])

        # A bad change changes nothing.
        for bad in ({"limits": {"merchant_rps": -1}}, {"limits": {"nope": 1}},
                    {"channels": {"nosuch": {"rate": 1}}}, {"limits": {"max_inflight": 0}},
                    {"limits": {"merchant_rps": 5}, "extra": 1}, [1]):
            r = http_request(self.server.port, "PUT", "/admin/guards", bad)
            self.assertError(r, 400, "invalid_request_error", "parameter_invalid")
        self.assertEqual(guards_view(self.server)["merchant"]["rate"], 0)

        r = http_request(self.server.port, "PUT", "/admin/guards",
                         {"limits": {"merchant_rps": 2, "merchant_burst": 2,
                                     "max_inflight": 50},
                          "channels": {"sandbox": {"rate": 40}}})
        self.assertStatus(r, 200)
        self.assertEqual(r.body["merchant"]["rate"], 2)
        statuses = [self.server.request("GET", "/v1/channels").status for _ in range(4)]
        self.assertEqual(statuses, [200, 200, 429, 429])

        # A restart keeps the change.
        self.server.restart()
        view = guards_view(self.server)
        self.assertEqual((view["merchant"]["rate"], view["merchant"]["burst"]), (2, 2))
        self.assertEqual(view["inflight"]["max_inflight"], 50)
        self.assertEqual(view["channels"][0]["pacer"]["rate"], 40)
        statuses = [self.server.request("GET", "/v1/channels").status for _ in range(3)]
        self.assertEqual(statuses, [200, 200, 429])

    def test_metrics_show_the_guards(self):
        text = http_request(self.server.port, "GET", "/metrics").body
        self.assertIn('payd_breaker_state{channel="sandbox"} 0', text)
        self.assertIn("payd_inflight_limit ", text)
        self.assertIn('payd_limiter_rejected_total{limiter="merchant"}', text)


class AdminKeyTest(PaydTestCase):
    server_env = {"PAYD_SERVER_ADMIN_KEY": "adm-" + "x" * 20}

    def test_admin_key_required(self):
        r = http_request(self.server.port, "GET", "/admin/guards")
        self.assertError(r, 401, "authentication_error", "admin_key_invalid")
        r = http_request(self.server.port, "GET", "/admin/guards",
                         headers={"Authorization": "Bearer " + self.server.key})
        self.assertError(r, 401, "authentication_error", "admin_key_invalid")
        r = http_request(self.server.port, "GET", "/admin/guards",
                         headers={"Authorization": "Bearer adm-" + "x" * 20})
        self.assertStatus(r, 200)
        # A merchant key does not open the admin API, nor the admin key /v1/.
        r = self.server.request("GET", "/v1/channels", key="adm-" + "x" * 20)
        self.assertEqual(r.status, 401)


class ConfigGuardsTest(PaydTestCase):
    shared_server = False

    def test_bad_guard_settings_refused(self):
        for env, needle in (({"PAYD_LIMITS_MERCHANT_RPS": "-3"}, "merchant_rps"),
                            ({"PAYD_BREAKER_FAILURE_RATIO": "1.5"}, "failure_ratio"),
                            ({"PAYD_LIMITS_ADAPTIVE": "maybe"}, "adaptive"),
                            ({"PAYD_LIMITS_BOGUS": "1"}, "PAYD_LIMITS_BOGUS"),
                            ({"PAYD_CHANNEL_SANDBOX_FALLBACK": "nowhere"}, "fallback")):
            s = self.start_server(start=False, env=env)
            s.spawn()
            rc = s.proc.wait(30)
            self.assertNotEqual(rc, 0, env)
            self.assertIn(needle, s.stderr_text(), env)

    def test_bad_guards_file_refused(self):
        s = self.start_server(start=False)
        with open(s.data_dir + "/guards.json", "w") as f:
            f.write('{"limits": {"merchant_rps": "fast"}}')
        s.spawn()
        self.assertNotEqual(s.proc.wait(30), 0)
        self.assertIn("guards.json", s.stderr_text())


if SLOW:
    # Under the sanitizers the machine is too slow for the pacing figure to
    # mean anything about payd; the invariant parts run in the fast suite.
    del PacingTest
