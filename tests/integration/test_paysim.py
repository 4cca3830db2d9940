"""
paysim, the PSP simulator (tools/paysim, docs/paysim.md), end to end over
HTTP: signatures, charges and their deduplication, closing a trade, refunds
(also 20 at once on one charge), every fault of the control API, signed
notifications with retries that survive kill -9, the daily statement, and
kill -9 during concurrent charges. paysim's journal is the external witness
payd's tests will trust, so these tests check it against what clients saw.

paysim does not use payd's store: the module runs in the SQLite run only
(with PAYD_TEST_STORE=postgres it is skipped).
"""

import concurrent.futures
import http.client
import os
import re
import signal
import socket
import subprocess
import threading
import time
import unittest

import harness
from harness import fire, unique, wait_until
from paysim import PAYSIM_BIN, SECRET, Paysim, Receiver

TRADE_NO = re.compile(r"^pt_[0-9a-f]{24}$")
REFUND_ID = re.compile(r"^pr_[0-9a-f]{24}$")


def today():
    return time.strftime("%Y-%m-%d", time.gmtime())


class PaysimTestCase(unittest.TestCase):
    """One paysim shared by the class (cls.sim), faults cleared after each
    test; start_paysim() starts more, cleaned up after the test."""

    shared = True
    sim_kw = {}
    maxDiff = None

    @classmethod
    def setUpClass(cls):
        cls.sim = None
        # Skipped test by test (run.py counts a class-level skip as failures).
        if harness.STORE != "sqlite":
            return
        if cls.shared:
            cls.sim = harness.started(Paysim(name=cls.__name__, **cls.sim_kw))

    @classmethod
    def tearDownClass(cls):
        if cls.sim is not None:
            cls.sim.cleanup()

    def setUp(self):
        if harness.STORE != "sqlite":
            self.skipTest("paysim does not use payd's store: it runs in the SQLite run")
        self._sims = []
        self._receivers = []

    def tearDown(self):
        if self.sim is not None and self.sim.running():
            self.sim.set_faults({})

    def start_paysim(self, start=True, **kw):
        p = Paysim(name=self.id(), **kw)
        self._sims.append(p)
        self.addCleanup(p.cleanup)
        if start:
            p.start()
        return p

    def receiver(self, **kw):
        r = Receiver(**kw)
        self._receivers.append(r)
        self.addCleanup(r.close)
        return r

    def server_logs(self):
        return harness.stderr_report(([self.sim] if self.sim else []) + getattr(self, "_sims", []))

    def assertError(self, r, status, code, param=None):
        self.assertEqual(r.status, status, r)
        self.assertTrue((r.header("Content-Type") or "").startswith("application/json"), r)
        self.assertIsInstance(r.error, dict, r)
        self.assertEqual(r.error.get("code"), code, r)
        self.assertTrue(r.error.get("message"), r)
        if param is not None:
            self.assertEqual(r.error.get("param"), param, r)
        return r.error


class SignatureTest(PaysimTestCase):
    def assertNothingFor(self, no):
        self.assertEqual(self.sim.charges_of(no), [])

    def assertChargeRefused(self, code, headers_for=None, **kw):
        """A charge sent with request()'s kw (and the headers that
        headers_for(its body) gives) is refused 401 code; nothing charged."""
        no = unique("sig")
        body = {"out_trade_no": no, "amount": 100, "currency": "CNY"}
        if headers_for is not None:
            kw.update(signed=False, headers=headers_for(body))
        self.assertError(self.sim.request("POST", "/v1/charges", body, **kw), 401, code)
        self.assertNothingFor(no)

    def test_missing_headers_refused(self):
        self.assertChargeRefused("signature_missing", signed=False)

    def test_wrong_secret_refused(self):
        self.assertChargeRefused("signature_invalid", secret="not-the-secret")

    def test_signature_of_another_body_refused(self):
        self.assertChargeRefused("signature_invalid",
                                 headers_for=lambda body: self.sim.headers_for(
                                     dict(body, amount=1)))

    def test_malformed_refused(self):
        no = unique("sig")
        body = {"out_trade_no": no, "amount": 100, "currency": "CNY"}
        for hdrs in ({"Paysim-Timestamp": "12x", "Paysim-Signature": "0" * 64},
                     {"Paysim-Timestamp": str(int(time.time())), "Paysim-Signature": "abc"}):
            r = self.sim.request("POST", "/v1/charges", body, signed=False, headers=hdrs)
            self.assertError(r, 401, "signature_invalid")
        self.assertNothingFor(no)

    def test_stale_timestamps_refused_either_way(self):
        no = unique("sig")
        body = {"out_trade_no": no, "amount": 100, "currency": "CNY"}
        for skew in (-301, 301, -86400):
            r = self.sim.request("POST", "/v1/charges", body,
                                 timestamp=int(time.time()) + skew)
            self.assertError(r, 401, "timestamp_stale")
        self.assertNothingFor(no)
        # Inside the window it is taken.
        r = self.sim.request("POST", "/v1/charges", body, timestamp=int(time.time()) - 250)
        self.assertEqual(r.status, 200, r)

    def test_queries_and_statements_signed_too(self):
        no = unique("sig")
        self.assertEqual(self.sim.charge(no).status, 200)
        for path in ("/v1/charges/" + no, "/v1/refunds/x", "/v1/statements?date=" + today()):
            self.assertError(self.sim.request("GET", path, signed=False), 401,
                             "signature_missing")
            self.assertError(self.sim.request("GET", path, secret="nope"), 401,
                             "signature_invalid")
        # GET signs an empty body, and upper-case hex is accepted.
        hdrs = self.sim.headers_for(b"")
        hdrs["Paysim-Signature"] = hdrs["Paysim-Signature"].upper()
        r = self.sim.request("GET", "/v1/charges/" + no, signed=False, headers=hdrs)
        self.assertEqual(r.status, 200, r)

    def test_control_and_health_unsigned(self):
        self.assertEqual(harness.http_request(self.sim.port, "GET", "/healthz").status, 200)
        self.assertEqual(harness.http_request(self.sim.port, "GET", "/control/faults").status,
                         200)
        r = harness.http_request(self.sim.port, "GET", "/nope")
        self.assertError(r, 404, "not_found")
        r = harness.http_request(self.sim.port, "DELETE", "/v1/charges")
        self.assertError(r, 405, "method_not_allowed")


class ChargeTest(PaysimTestCase):
    def test_charge_succeeds_and_is_journaled(self):
        no = unique("ch")
        r = self.sim.charge(no, amount=1999, currency="CNY")
        self.assertEqual(r.status, 200, r)
        b = r.body
        self.assertEqual(b["out_trade_no"], no)
        self.assertRegex(b["trade_no"], TRADE_NO)
        self.assertEqual((b["status"], b["amount"], b["currency"], b["method"]),
                         ("succeeded", 1999, "CNY", "ok"))
        self.assertRegex(b["time"], harness.RFC3339_MS)
        self.assertNotIn("code", b)
        rows = self.sim.charges_of(no)
        self.assertEqual(len(rows), 1)
        self.assertEqual((rows[0]["trade_no"], rows[0]["amount"], rows[0]["currency"],
                          rows[0]["status"]), (b["trade_no"], 1999, "CNY", "succeeded"))

    def test_declined_method(self):
        no = unique("ch")
        r = self.sim.charge(no, method="declined")
        self.assertEqual(r.status, 200, r)
        self.assertEqual((r.body["status"], r.body["code"]), ("declined", "card_declined"))
        self.assertTrue(r.body["message"])
        self.assertEqual([c["status"] for c in self.sim.charges_of(no)], ["declined"])
        self.assertEqual(self.sim.get_charge(no).body, r.body)

    def test_duplicate_same_returns_first_result(self):
        no = unique("ch")
        first = self.sim.charge(no, amount=500)
        again = self.sim.charge(no, amount=500)
        self.assertEqual(first.status, 200)
        self.assertEqual(again.status, 200)
        self.assertEqual(again.raw, first.raw)
        self.assertEqual(len(self.sim.charges_of(no)), 1)
        # method "ok" given explicitly is the same request as the default.
        self.assertEqual(self.sim.charge(no, amount=500, method="ok").raw, first.raw)

    def test_duplicate_different_refused(self):
        no = unique("ch")
        first = self.sim.charge(no, amount=500, currency="CNY")
        self.assertEqual(first.status, 200)
        for kw in ({"amount": 501}, {"currency": "USD"}, {"method": "declined"}):
            args = {"amount": 500, "currency": "CNY"}
            args.update(kw)
            r = self.sim.charge(no, **args)
            self.assertError(r, 409, "duplicate_out_trade_no", "out_trade_no")
        rows = self.sim.charges_of(no)
        self.assertEqual([(c["amount"], c["currency"], c["trade_no"]) for c in rows],
                         [(500, "CNY", first.body["trade_no"])])

    def test_concurrent_identical_charges_one_row(self):
        no = unique("ch")
        results = fire(20, lambda i: self.sim.charge(no, amount=777))
        for r in results:
            self.assertNotIsInstance(r, Exception)
            self.assertEqual(r.status, 200, r)
        self.assertEqual(len({r.raw for r in results}), 1)
        self.assertEqual(len(self.sim.charges_of(no)), 1)

    def test_concurrent_distinct_charges(self):
        nos = [unique("chc") for _ in range(40)]
        results = fire(40, lambda i: self.sim.charge(nos[i], amount=100 + i))
        self.assertTrue(all(r.status == 200 for r in results), results)
        j = self.sim.journal()
        for i, no in enumerate(nos):
            rows = self.sim.charges_of(no, j)
            self.assertEqual([c["amount"] for c in rows], [100 + i])
        self.assertEqual(len({r.body["trade_no"] for r in results}), 40)

    def test_query(self):
        no = unique("ch")
        r = self.sim.charge(no)
        q = self.sim.get_charge(no)
        self.assertEqual(q.status, 200)
        self.assertEqual(q.body, r.body)
        self.assertError(self.sim.get_charge(unique("none")), 404, "not_found", "out_trade_no")

    def test_bad_requests_refused_and_nothing_journaled(self):
        no = unique("bad")
        good = {"out_trade_no": no, "amount": 100, "currency": "CNY"}
        cases = [
            ({"amount": 100, "currency": "CNY"}, "out_trade_no"),
            (dict(good, amount=0), "amount"),
            (dict(good, amount=-5), "amount"),
            (dict(good, amount=1.5), "amount"),
            (dict(good, amount="100"), "amount"),
            (dict(good, amount=10**13), "amount"),
            (dict(good, currency="cny"), "currency"),
            (dict(good, currency="CNYX"), "currency"),
            (dict(good, method="slow"), "method"),
            (dict(good, notify_url="ftp://x"), "notify_url"),
            (dict(good, out_trade_no="has space"), "out_trade_no"),
            (dict(good, out_trade_no="x" * 65), "out_trade_no"),
            (dict(good, extra=1), "extra"),
        ]
        for body, param in cases:
            r = self.sim.request("POST", "/v1/charges", body)
            self.assertError(r, 400, "invalid_request", param)
        for raw in (b"", b"[]", b"{", b'{"out_trade_no":"a","out_trade_no":"b"}'):
            self.assertError(self.sim.request("POST", "/v1/charges", raw), 400,
                             "invalid_request")
        self.assertError(self.sim.request("GET", "/v1/charges/bad%20no"), 400, "invalid_request")
        self.assertEqual(self.sim.charges_of(no), [])

    def test_close_never_charged_then_charge_refused(self):
        no = unique("cl")
        r = self.sim.close_trade(no)
        self.assertEqual(r.status, 200, r)
        self.assertEqual((r.body["out_trade_no"], r.body["status"]), (no, "closed"))
        self.assertEqual(self.sim.close_trade(no).body, r.body)  # closing again: the same
        self.assertEqual(self.sim.get_charge(no).body, r.body)
        self.assertError(self.sim.charge(no), 409, "trade_closed", "out_trade_no")
        j = self.sim.journal()
        self.assertEqual(self.sim.charges_of(no, j), [])
        self.assertEqual([c["out_trade_no"] for c in j["closed_trades"]
                          if c["out_trade_no"] == no], [no])

    def test_close_of_a_charged_trade_changes_nothing(self):
        no = unique("cl")
        charged = self.sim.charge(no).body
        r = self.sim.close_trade(no)
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.body, charged)
        self.assertEqual(self.sim.get_charge(no).body, charged)
        self.assertEqual([c["out_trade_no"] for c in self.sim.journal()["closed_trades"]
                          if c["out_trade_no"] == no], [])

    def test_concurrent_close_and_charge_exactly_one_wins(self):
        for _ in range(5):
            no = unique("race")
            results = fire(10, lambda i: (self.sim.charge(no) if i % 2 else
                                          self.sim.close_trade(no)))
            charged = [r for r in results if r.status == 200 and r.body["status"] == "succeeded"]
            closed = [r for r in results if r.status == 200 and r.body["status"] == "closed"]
            j = self.sim.journal()
            in_charges = len(self.sim.charges_of(no, j))
            in_closed = len([c for c in j["closed_trades"] if c["out_trade_no"] == no])
            self.assertEqual(in_charges + in_closed, 1, results)
            if in_charges:
                self.assertEqual(closed, [])
            else:
                self.assertEqual(charged, [])
                refused = [r for r in results if r.status == 409]
                self.assertEqual(len(refused), 5, results)


class RefundTest(PaysimTestCase):
    def charged(self, amount=1000, method=None):
        no = unique("rf")
        r = self.sim.charge(no, amount=amount, method=method)
        self.assertEqual(r.status, 200, r)
        return no, r.body

    def test_partial_then_full(self):
        no, ch = self.charged(1000)
        r1 = self.sim.refund(no, unique("r"), 300)
        self.assertEqual(r1.status, 200, r1)
        b = r1.body
        self.assertRegex(b["refund_id"], REFUND_ID)
        self.assertEqual((b["out_trade_no"], b["trade_no"], b["amount"], b["currency"],
                          b["status"]), (no, ch["trade_no"], 300, "CNY", "succeeded"))
        r2 = self.sim.refund(no, unique("r"), 700)
        self.assertEqual(r2.status, 200, r2)
        over = self.sim.refund(no, unique("r"), 1)
        err = self.assertError(over, 409, "refund_exceeds_charge", "amount")
        self.assertIn("1000", err["message"])
        refunds = [x for x in self.sim.journal()["refunds"] if x["out_trade_no"] == no]
        self.assertEqual(sorted(x["amount"] for x in refunds), [300, 700])
        self.assertEqual(self.sim.get_refund(b["out_refund_no"]).body, b)

    def test_over_refund_in_one_go(self):
        no, _ = self.charged(1000)
        self.assertError(self.sim.refund(no, unique("r"), 1001), 409, "refund_exceeds_charge")
        self.assertEqual([x for x in self.sim.journal()["refunds"] if x["out_trade_no"] == no],
                         [])

    def test_dedup_by_out_refund_no(self):
        no, _ = self.charged(1000)
        rno = unique("r")
        first = self.sim.refund(no, rno, 400)
        self.assertEqual(first.status, 200)
        again = self.sim.refund(no, rno, 400)
        self.assertEqual(again.raw, first.raw)
        self.assertError(self.sim.refund(no, rno, 401), 409, "duplicate_out_refund_no",
                         "out_refund_no")
        other_no, _ = self.charged(1000)
        self.assertError(self.sim.refund(other_no, rno, 400), 409, "duplicate_out_refund_no")
        self.assertEqual(len([x for x in self.sim.journal()["refunds"]
                              if x["out_refund_no"] == rno]), 1)

    def test_refund_after_full_refund_replays(self):
        no, _ = self.charged(100)
        rno = unique("r")
        first = self.sim.refund(no, rno, 100)
        self.assertEqual(first.status, 200)
        # A retried refund is answered as before even though nothing is left.
        self.assertEqual(self.sim.refund(no, rno, 100).raw, first.raw)

    def test_unknown_declined_and_closed_charges_not_refundable(self):
        self.assertError(self.sim.refund(unique("none"), unique("r"), 1), 404, "not_found",
                         "out_trade_no")
        no, _ = self.charged(100, method="declined")
        self.assertError(self.sim.refund(no, unique("r"), 1), 409, "charge_not_refundable")
        closed = unique("cl")
        self.sim.close_trade(closed)
        self.assertError(self.sim.refund(closed, unique("r"), 1), 404, "not_found")
        self.assertError(self.sim.get_refund(unique("none")), 404, "not_found", "out_refund_no")

    def test_20_concurrent_refunds_never_exceed_the_charge(self):
        amount = 1000
        no, _ = self.charged(amount)
        rnos = [unique("cr") for _ in range(20)]
        results = fire(20, lambda i: self.sim.refund(no, rnos[i], 150))
        ok = [r for r in results if not isinstance(r, Exception) and r.status == 200]
        refused = [r for r in results if not isinstance(r, Exception) and r.status == 409]
        self.assertEqual(len(ok) + len(refused), 20, results)
        for r in refused:
            self.assertEqual(r.error["code"], "refund_exceeds_charge", r)
        answered = sum(r.body["amount"] for r in ok)
        journaled = [x for x in self.sim.journal()["refunds"] if x["out_trade_no"] == no]
        self.assertLessEqual(sum(x["amount"] for x in journaled), amount)
        self.assertEqual(sum(x["amount"] for x in journaled), answered)
        self.assertEqual(sorted(x["out_refund_no"] for x in journaled),
                         sorted(r.body["out_refund_no"] for r in ok))
        self.assertEqual(len(ok), amount // 150)  # serial: as many as fit

    def test_concurrent_refunds_of_random_sizes(self):
        no, _ = self.charged(1000)
        sizes = [37, 400, 250, 1, 999, 120, 80, 500, 333, 64, 10, 700]
        results = fire(len(sizes), lambda i: self.sim.refund(no, unique("rr%d" % i), sizes[i]))
        ok = sum(r.body["amount"] for r in results if r.status == 200)
        journaled = sum(x["amount"] for x in self.sim.journal()["refunds"]
                        if x["out_trade_no"] == no)
        self.assertLessEqual(journaled, 1000)
        self.assertEqual(journaled, ok)


class FaultTest(PaysimTestCase):
    def body(self, no, amount=100):
        return {"out_trade_no": no, "amount": amount, "currency": "CNY"}

    def test_error_rate_500_and_nothing_journaled(self):
        self.sim.set_faults({"error_rate": 1})
        no = unique("err")
        self.assertError(self.sim.charge(no), 500, "system_error")
        self.assertError(self.sim.get_charge(no), 500, "system_error")
        self.sim.set_faults({})
        self.assertEqual(self.sim.charges_of(no), [])
        no2 = unique("err")
        self.assertEqual(self.sim.charge(no2, amount=100).status, 200)
        self.sim.set_faults({"error_rate": 1, "scope": ["refund"]})
        self.assertError(self.sim.refund(no2, unique("r"), 10), 500, "system_error")
        self.assertEqual(self.sim.get_charge(no2).status, 200)  # queries out of scope
        self.assertEqual([x for x in self.sim.journal()["refunds"] if x["out_trade_no"] == no2],
                         [])

    def test_hang_charge_happens_answer_never_comes(self):
        self.sim.set_faults({"hang_rate": 1})
        no = unique("hang")
        t0 = time.monotonic()
        with self.assertRaises(socket.timeout):
            self.sim.charge(no, timeout=1.0)
        self.assertGreaterEqual(time.monotonic() - t0, 0.9)
        rows = self.sim.charges_of(no)
        self.assertEqual(len(rows), 1)
        self.assertEqual(rows[0]["status"], "succeeded")
        self.sim.set_faults({})
        # The client resolves the unknown by query, or by sending it again.
        self.assertEqual(self.sim.get_charge(no).body["trade_no"], rows[0]["trade_no"])
        self.assertEqual(self.sim.charge(no).body["trade_no"], rows[0]["trade_no"])
        self.assertEqual(len(self.sim.charges_of(no)), 1)

    def test_hang_refund(self):
        no = unique("hang")
        self.sim.charge(no, amount=100)
        self.sim.set_faults({"hang_rate": 1, "scope": ["refund"]})
        rno = unique("r")
        with self.assertRaises(socket.timeout):
            self.sim.refund(no, rno, 40, timeout=0.5)
        self.sim.set_faults({})
        self.assertEqual(self.sim.get_refund(rno).body["amount"], 40)

    def test_lost_answer_closed_without_answer_charge_happened(self):
        self.sim.set_faults({"lost_answer_rate": 1})
        no = unique("lost")
        with self.assertRaises(http.client.RemoteDisconnected):
            self.sim.charge(no)
        self.sim.set_faults({})
        rows = self.sim.charges_of(no)
        self.assertEqual(len(rows), 1)
        self.assertEqual(self.sim.get_charge(no).body["trade_no"], rows[0]["trade_no"])

    def test_reset_nothing_journaled(self):
        self.sim.set_faults({"reset_rate": 1})
        no = unique("reset")
        with self.assertRaises(ConnectionResetError):
            self.sim.charge(no)
        with self.assertRaises(ConnectionResetError):
            self.sim.get_charge(no)
        self.sim.set_faults({})
        self.assertEqual(self.sim.charges_of(no), [])
        self.assertError(self.sim.get_charge(no), 404, "not_found")

    def test_outage_drops_everything_control_still_answers(self):
        no = unique("out")
        self.sim.set_faults({"outage": True})
        for call in (lambda: self.sim.charge(no), lambda: self.sim.get_charge(no),
                     lambda: self.sim.refund(no, unique("r"), 1)):
            with self.assertRaises((ConnectionResetError, BrokenPipeError)):
                call()
        self.assertTrue(self.sim.faults()["outage"])
        self.sim.set_faults({})
        self.assertEqual(self.sim.charges_of(no), [])
        self.assertEqual(self.sim.charge(no).status, 200)

    def test_latency_fixed_lower_bound(self):
        self.sim.set_faults({"latency_ms": {"dist": "fixed", "ms": 200}})
        for call in (lambda: self.sim.charge(unique("lat")),
                     lambda: self.sim.get_charge(unique("lat"))):
            t0 = time.monotonic()
            r = call()
            self.assertGreaterEqual(time.monotonic() - t0, 0.2)
            self.assertIn(r.status, (200, 404))

    def test_latency_distributions_accepted(self):
        for lat in ({"dist": "uniform", "min_ms": 10, "max_ms": 50},
                    {"dist": "exponential", "mean_ms": 20, "max_ms": 80},
                    {"dist": "exponential", "mean_ms": 5}, 30):
            got = self.sim.set_faults({"latency_ms": lat})
            if isinstance(lat, int):
                self.assertEqual(got["latency_ms"], {"dist": "fixed", "ms": lat})
            else:
                self.assertEqual(got["latency_ms"]["dist"], lat["dist"])
            t0 = time.monotonic()
            self.assertEqual(self.sim.charge(unique("lat")).status, 200)
            if isinstance(lat, dict) and lat["dist"] == "uniform":
                self.assertGreaterEqual(time.monotonic() - t0, 0.01)

    def test_parked_requests_hold_no_thread(self):
        # With one server thread, requests waiting out a latency or held by
        # a hang leave it free: a charge is answered meanwhile.
        sim = self.start_paysim(threads=1)
        outcomes = []

        def query():
            try:
                outcomes.append(sim.get_charge(unique("par"), timeout=60).status)
            except (http.client.RemoteDisconnected, ConnectionResetError):
                outcomes.append("closed")

        def park(faults, gauge):
            """Three queries parked by faults (counted by /healthz's gauge);
            a charge is still answered."""
            sim.set_faults(dict(faults, scope=["query"]))
            parked = [threading.Thread(target=query) for _ in range(3)]
            for t in parked:
                t.start()
            wait_until(lambda: sim.health()[gauge] == 3, what="3 queries " + gauge)
            self.assertEqual(sim.charge(unique("par")).status, 200)
            return parked
        threads = park({"latency_ms": 30000}, "waiting") + park({"hang_rate": 1}, "held")
        self.assertEqual(sim.stop(signal.SIGTERM), 0)  # answers and closes them all
        for t in threads:
            t.join(60)
        self.assertEqual(sorted(outcomes, key=str), [503, 503, 503, "closed", "closed", "closed"])

    def test_decline_rate(self):
        self.sim.set_faults({"decline_rate": 1})
        no = unique("dec")
        r = self.sim.charge(no)
        self.assertEqual((r.status, r.body["status"], r.body["code"]),
                         (200, "declined", "card_declined"))
        self.assertEqual([c["status"] for c in self.sim.charges_of(no)], ["declined"])
        self.sim.set_faults({})
        # The first result stands: the same request again is declined again.
        self.assertEqual(self.sim.charge(no).raw, r.raw)

    def test_scope(self):
        self.sim.set_faults({"error_rate": 1, "scope": ["charge"]})
        no = unique("sc")
        self.assertError(self.sim.charge(no), 500, "system_error")
        self.assertError(self.sim.get_charge(no), 404, "not_found")
        self.assertEqual(self.sim.statement(today()).status, 200)
        self.sim.set_faults({"error_rate": 1, "scope": ["statement"]})
        self.assertError(self.sim.statement(today()), 500, "system_error")
        self.assertEqual(self.sim.charge(no).status, 200)

    def test_seed_reproduces_the_faults(self):
        def pattern():
            return [self.sim.charge(unique("seed")).status for _ in range(24)]
        self.sim.set_faults({"error_rate": 0.5, "seed": 42})
        first = pattern()
        self.assertIn(200, first)
        self.assertIn(500, first)
        self.sim.set_faults({"error_rate": 0.5, "seed": 42})
        self.assertEqual(pattern(), first)
        self.assertEqual(self.sim.faults()["seed"], 42)

    def test_settings_round_trip_and_bad_settings_refused(self):
        want = {"scope": ["charge", "query"], "latency_ms": {"dist": "uniform", "min_ms": 1,
                                                             "max_ms": 2},
                "error_rate": 0.25, "hang_rate": 0.0, "lost_answer_rate": 0.5,
                "reset_rate": 0.0, "decline_rate": 0.125, "outage": False, "seed": 7}
        self.assertEqual(self.sim.set_faults(want), want)
        self.assertEqual(self.sim.faults(), want)
        for bad, param in (({"error_rate": 2}, "error_rate"), ({"hang_rate": "x"}, "hang_rate"),
                           ({"nope": 1}, "nope"), ({"scope": ["x"]}, "scope"),
                           ({"scope": []}, "scope"), ({"outage": 1}, "outage"),
                           ({"seed": -1}, "seed"),
                           ({"latency_ms": {"dist": "normal"}}, "latency_ms.dist"),
                           ({"latency_ms": {"dist": "fixed"}}, "latency_ms.ms"),
                           ({"latency_ms": {"dist": "fixed", "ms": 60001}}, "latency_ms.ms"),
                           ({"latency_ms": {"dist": "uniform", "min_ms": 5, "max_ms": 1}},
                            "latency_ms.min_ms"),
                           ({"latency_ms": {"dist": "fixed", "ms": 1, "x": 2}}, "latency_ms.x")):
            r = harness.http_request(self.sim.port, "PUT", "/control/faults", bad)
            self.assertError(r, 400, "invalid_request", param)
        r = harness.http_request(self.sim.port, "PUT", "/control/faults", b"{")
        self.assertError(r, 400, "invalid_request")
        self.assertEqual(self.sim.faults(), want)  # unchanged

    def test_faults_mixed_under_load_journal_matches_answers(self):
        # Every answered 200 is journaled; every reset or 500 is not; hung and
        # lost ones are journaled although unanswered.
        self.sim.set_faults({"error_rate": 0.15, "reset_rate": 0.15, "lost_answer_rate": 0.15,
                             "hang_rate": 0.1, "latency_ms": {"dist": "uniform", "min_ms": 0,
                                                              "max_ms": 30}, "seed": 5})
        nos = [unique("mix") for _ in range(60)]

        def one(i):
            try:
                r = self.sim.charge(nos[i], timeout=1.5)
                return r.status
            except socket.timeout:
                return "timeout"
            except http.client.RemoteDisconnected:
                return "closed"
            except (ConnectionResetError, BrokenPipeError):
                return "reset"

        with concurrent.futures.ThreadPoolExecutor(8) as ex:
            outcomes = list(ex.map(one, range(60)))
        self.sim.set_faults({})
        j = self.sim.journal()
        for no, outcome in zip(nos, outcomes):
            n = len(self.sim.charges_of(no, j))
            if outcome in (200, "timeout", "closed"):
                self.assertEqual(n, 1, (no, outcome))
            else:
                self.assertIn(outcome, (500, "reset"))
                self.assertEqual(n, 0, (no, outcome))
        self.assertEqual(len(set(outcomes)), 5, outcomes)


class NotificationTest(PaysimTestCase):
    shared = False

    def event_of(self, rec):
        self.assertTrue(rec["verified"], rec)
        self.assertEqual(rec["headers"].get("Content-Type"), "application/json")
        return rec["json"]

    def notes(self, sim, out_trade_no, event="charge.succeeded"):
        d = sim.notifications()
        ns = [n for n in d["notifications"] if n["out_trade_no"] == out_trade_no
              and n["event"] == event]
        for n in ns:
            n["attempt_rows"] = [a for a in d["notification_attempts"]
                                 if a["notification_id"] == n["id"]]
        return ns

    def test_charge_notification_delivered_signed(self):
        rec = self.receiver()
        sim = self.start_paysim(notify_delays="0.2,0.2")
        no = unique("nt")
        ch = sim.charge(no, amount=4321, notify_url=rec.url).body
        got = rec.wait_for(1)
        ev = self.event_of(got[0])
        self.assertEqual(got[0]["path"], "/notify")
        self.assertEqual({k: ev[k] for k in ("event", "out_trade_no", "trade_no", "amount",
                                             "currency", "status", "time")},
                         {"event": "charge.succeeded", "out_trade_no": no,
                          "trade_no": ch["trade_no"], "amount": 4321, "currency": "CNY",
                          "status": "succeeded", "time": ch["time"]})
        self.assertRegex(ev["notify_id"], r"^pn_[0-9a-f]{24}$")
        self.assertEqual(got[0]["headers"].get("Paysim-Notify-Id"), ev["notify_id"])
        n = wait_until(lambda: [x for x in self.notes(sim, no) if x["state"] == "delivered"],
                       what="delivered")[0]
        self.assertEqual((n["attempts"], n["notify_id"], n["url"]), (1, ev["notify_id"], rec.url))
        self.assertEqual([(a["attempt"], a["http_status"], a["error"]) for a in n["attempt_rows"]],
                         [(1, 200, None)])
        time.sleep(0.5)
        self.assertEqual(len(rec.received()), 1)  # delivered once, not again

    def test_default_notify_url_and_declines_not_notified(self):
        rec = self.receiver()
        sim = self.start_paysim(notify_url=rec.url)
        declined = unique("nt")
        sim.charge(declined, method="declined")
        no = unique("nt")
        sim.charge(no)
        rec.wait_for(1)
        time.sleep(0.3)
        self.assertEqual([r["json"]["out_trade_no"] for r in rec.received()], [no])
        self.assertEqual(self.notes(sim, declined), [])

    def test_retried_until_success(self):
        rec = self.receiver(answers=[(500, b"error"), (200, b"fail"), (404, b"success")])
        sim = self.start_paysim(notify_delays="0.2,0.3,0.3,5")
        no = unique("nt")
        sim.charge(no, notify_url=rec.url)
        got = rec.wait_for(4)
        ids = {self.event_of(g)["notify_id"] for g in got}
        self.assertEqual(len(ids), 1)  # one event, delivered again
        bodies = {g["body"] for g in got}
        self.assertEqual(len(bodies), 1)  # byte for byte the same body
        # The schedule: at least the delays apart.
        gaps = [b["at"] - a["at"] for a, b in zip(got, got[1:])]
        for gap, delay in zip(gaps, (0.2, 0.3, 0.3)):
            self.assertGreaterEqual(gap, delay - 0.05, gaps)
        n = wait_until(lambda: [x for x in self.notes(sim, no) if x["state"] == "delivered"],
                       what="delivered")[0]
        self.assertEqual(n["attempts"], 4)
        self.assertEqual([a["http_status"] for a in n["attempt_rows"]], [500, 200, 404, 200])
        self.assertEqual([a["error"] is None for a in n["attempt_rows"]],
                         [False, False, False, True])

    def test_gives_up_after_the_last_delay(self):
        rec = self.receiver(default=(503, b"busy"))
        sim = self.start_paysim(notify_delays="0.1,0.1")
        no = unique("nt")
        sim.charge(no, notify_url=rec.url)
        n = wait_until(lambda: [x for x in self.notes(sim, no) if x["state"] == "failed"],
                       what="given up")[0]
        self.assertEqual(n["attempts"], 3)
        self.assertIsNone(n["next_ms"])
        self.assertEqual(n["last_status"], 503)
        time.sleep(0.4)
        self.assertEqual(len(rec.received()), 3)

    def test_unreachable_receiver_counts_as_failure(self):
        port = harness.free_port()  # nothing listens there
        sim = self.start_paysim(notify_delays="0.1")
        no = unique("nt")
        sim.charge(no, notify_url="http://127.0.0.1:%d/x" % port)
        n = wait_until(lambda: [x for x in self.notes(sim, no) if x["state"] == "failed"],
                       what="given up")[0]
        self.assertEqual(n["attempts"], 2)
        self.assertIsNone(n["last_status"])
        self.assertTrue(n["last_error"])

    def test_refund_notification(self):
        rec = self.receiver()
        sim = self.start_paysim()
        no = unique("nt")
        sim.charge(no, amount=1000, notify_url=rec.url)
        rno = unique("r")
        rf = sim.refund(no, rno, 250).body  # to the charge's notify_url
        got = rec.wait_for(2)
        events = sorted((self.event_of(g) for g in got), key=lambda e: e["event"])
        ev = events[1]
        self.assertEqual({k: ev[k] for k in ("event", "out_trade_no", "trade_no",
                                             "out_refund_no", "refund_id", "amount", "currency",
                                             "status", "time")},
                         {"event": "refund.succeeded", "out_trade_no": no,
                          "trade_no": rf["trade_no"], "out_refund_no": rno,
                          "refund_id": rf["refund_id"], "amount": 250, "currency": "CNY",
                          "status": "succeeded", "time": rf["time"]})
        # A refund can name its own URL.
        rec2 = self.receiver()
        sim.refund(no, unique("r"), 50, notify_url=rec2.url)
        self.assertEqual(self.event_of(rec2.wait_for(1)[0])["amount"], 50)

    def test_pending_notifications_resume_after_kill9(self):
        rec = self.receiver(default=(500, b"down"))
        sim = self.start_paysim(notify_delays="0.3,0.3,0.3,0.3,0.3,0.3,0.3,0.3,0.3,0.3")
        nos = [unique("nk") for _ in range(3)]
        for no in nos:
            sim.charge(no, notify_url=rec.url)
        rec.wait_for(3)  # each tried once at least, and failed
        self.assertEqual(sim.kill9(), -signal.SIGKILL)
        first_ids = {r["json"]["out_trade_no"]: r["json"]["notify_id"] for r in rec.received()}
        rec.default = (200, b"success")
        sim.start()
        for no in nos:
            wait_until(lambda: [x for x in self.notes(sim, no) if x["state"] == "delivered"],
                       what="delivered after restart: %s" % no)
        delivered = [r["json"] for r in rec.received() if r["at"] and r["verified"]]
        for no in nos:
            self.assertEqual({e["notify_id"] for e in delivered if e["out_trade_no"] == no},
                             {first_ids[no]})

    def test_notification_in_journal_before_answer_kill9_right_after(self):
        # The notification is committed with the charge: a charge answered
        # 200 has its notification even when paysim dies at once.
        sim = self.start_paysim(notify_url="http://127.0.0.1:%d/x" % harness.free_port(),
                                notify_delays="60")
        no = unique("nk")
        self.assertEqual(sim.charge(no).status, 200)
        sim.kill9()
        j = sim.journal_cli()
        self.assertEqual([n["out_trade_no"] for n in j["notifications"]], [no])
        self.assertEqual(j["notifications"][0]["state"], "pending")


class StatementTest(PaysimTestCase):
    shared = False

    def test_statement_lists_the_days_charges_and_refunds(self):
        sim = self.start_paysim()
        a, b, d = unique("st"), unique("st"), unique("st")
        ca = sim.charge(a, amount=1000).body
        cb = sim.charge(b, amount=250, currency="USD").body
        sim.charge(d, method="declined")
        ra = sim.refund(a, unique("r"), 300).body
        r = sim.statement(today())
        self.assertEqual(r.status, 200, r)
        self.assertTrue((r.header("Content-Type") or "").startswith("application/x-ndjson"))
        text = r.raw.decode()
        self.assertTrue(text.endswith("\n"))
        import json
        lines = [json.loads(line) for line in text.splitlines()]
        summary = lines[-1]
        items = lines[:-1]
        self.assertEqual([i["type"] for i in items], ["charge", "charge", "refund"])
        self.assertEqual(items[0], {"type": "charge", "time": ca["time"], "out_trade_no": a,
                                    "trade_no": ca["trade_no"], "amount": 1000,
                                    "currency": "CNY", "status": "succeeded"})
        self.assertEqual(items[1]["trade_no"], cb["trade_no"])
        self.assertEqual(items[2], {"type": "refund", "time": ra["time"], "out_trade_no": a,
                                    "trade_no": ca["trade_no"],
                                    "out_refund_no": ra["out_refund_no"],
                                    "refund_id": ra["refund_id"], "amount": 300,
                                    "currency": "CNY", "status": "succeeded"})
        self.assertEqual(summary, {"type": "summary", "date": today(), "complete": False,
                                   "charge_count": 2, "refund_count": 1,
                                   "totals": {
                                       "CNY": {"charge_count": 1, "charge_amount": 1000,
                                               "refund_count": 1, "refund_amount": 300,
                                               "net_amount": 700},
                                       "USD": {"charge_count": 1, "charge_amount": 250,
                                               "refund_count": 0, "refund_amount": 0,
                                               "net_amount": 250}}})
        times = [i["time"] for i in items]
        self.assertEqual(times, sorted(times))

    def test_other_day_and_bad_dates(self):
        sim = self.start_paysim()
        sim.charge(unique("st"))
        r = sim.statement("2001-02-03")
        self.assertEqual(r.status, 200)
        import json
        self.assertEqual([json.loads(x) for x in r.raw.decode().splitlines()],
                         [{"type": "summary", "date": "2001-02-03", "complete": True,
                           "charge_count": 0, "refund_count": 0, "totals": {}}])
        for bad in ("", "2001-02-30", "2001-2-3", "20010203", "yesterday", "2001-13-01"):
            self.assertError(sim.statement(bad), 400, "invalid_request", "date")
        self.assertError(sim.request("GET", "/v1/statements"), 400, "invalid_request", "date")


class ProcessTest(PaysimTestCase):
    shared = False

    def test_sigterm_exits_0_and_journal_survives(self):
        sim = self.start_paysim()
        no = unique("pr")
        ch = sim.charge(no).body
        self.assertEqual(sim.stop(signal.SIGTERM), 0, sim.stderr_tail())
        self.assertEqual([c["trade_no"] for c in sim.journal_cli()["charges"]], [ch["trade_no"]])
        sim.start()
        self.assertEqual(sim.get_charge(no).body, ch)
        self.assertEqual(sim.charge(no).body, ch)
        self.assertEqual(sim.stop(signal.SIGINT), 0)

    def test_sigterm_while_requests_wait_and_hang(self):
        sim = self.start_paysim()
        sim.set_faults({"latency_ms": 30000, "scope": ["query"]})
        waiting = []
        t = threading.Thread(target=lambda: waiting.append(sim.get_charge("x", timeout=60)))
        t.start()
        wait_until(lambda: sim.health()["waiting"] == 1, what="the query waiting")
        sim.set_faults({"hang_rate": 1, "scope": ["charge"]})
        held = []

        def hang():
            try:
                sim.charge(unique("pr"), timeout=60)
            except Exception as e:
                held.append(e)
        t2 = threading.Thread(target=hang)
        t2.start()
        wait_until(lambda: sim.health()["held"] == 1, what="the charge held")
        self.assertEqual(sim.stop(signal.SIGTERM), 0, sim.stderr_tail())
        t.join(60)
        t2.join(60)
        self.assertEqual(waiting[0].status, 503, waiting)
        self.assertEqual(waiting[0].error["code"], "shutting_down")
        self.assertEqual(len(held), 1)
        self.assertIsInstance(held[0], (http.client.RemoteDisconnected, ConnectionResetError))
        self.assertEqual(len(sim.journal_cli()["charges"]), 1)  # the held charge happened

    def test_kill9_during_concurrent_charges_loses_nothing_answered(self):
        sim = self.start_paysim(threads=4)
        answered = []
        lock = threading.Lock()
        stop = threading.Event()

        def worker(w):
            i = 0
            while not stop.is_set():
                no = "k9-%d-%d-%d" % (os.getpid(), w, i)
                i += 1
                try:
                    r = sim.charge(no, amount=100 + i, timeout=5)
                except (OSError, http.client.HTTPException):
                    return
                if r.status == 200:
                    with lock:
                        answered.append(r.body)

        threads = [threading.Thread(target=worker, args=(w,)) for w in range(8)]
        for th in threads:
            th.start()
        wait_until(lambda: len(answered) >= 50, what="50 charges answered")
        self.assertEqual(sim.kill9(), -signal.SIGKILL)
        stop.set()
        for th in threads:
            th.join(30)
        offline = sim.journal_cli()
        sim.start()
        online = sim.journal()
        for j in (offline, online):
            rows = {c["out_trade_no"]: c for c in j["charges"]}
            self.assertEqual(len(rows), len(j["charges"]))  # unique
            for b in answered:
                self.assertIn(b["out_trade_no"], rows)
                self.assertEqual(rows[b["out_trade_no"]]["trade_no"], b["trade_no"])
                self.assertEqual(rows[b["out_trade_no"]]["amount"], b["amount"])
        self.assertEqual(offline["charges"], online["charges"])
        # Each answered charge again: the same answer, nothing new.
        for b in answered[:20]:
            self.assertEqual(sim.charge(b["out_trade_no"], amount=b["amount"]).body, b)
        self.assertEqual(len(sim.journal()["charges"]), len(online["charges"]))

    def test_journal_cli_matches_control_api(self):
        sim = self.start_paysim()
        no = unique("cli")
        sim.charge(no, amount=300)
        sim.refund(no, unique("r"), 100)
        sim.close_trade(unique("cl"))
        online = sim.journal()
        offline = sim.journal_cli()
        for k in ("charges", "refunds", "closed_trades"):
            self.assertEqual(offline[k], online[k])
        self.assertIn("notifications", offline)
        self.assertIn("notification_attempts", offline)

    def test_command_line_refusals(self):
        sim = self.start_paysim()
        # A second paysim on the same data directory is refused.
        cp = subprocess.run([PAYSIM_BIN, "--listen", "127.0.0.1:%d" % harness.free_port(),
                             "--data-dir", sim.data_dir, "--secret", SECRET],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=30)
        self.assertEqual(cp.returncode, 1, cp)
        self.assertIn(b"another paysim", cp.stderr)
        for args in (["--listen", "127.0.0.1:1"],                       # no data dir, secret
                     ["--listen", "nope", "--data-dir", "/tmp/x", "--secret", "s"],
                     ["--listen", "127.0.0.1:0", "--data-dir", "/tmp/x", "--secret", "s",
                      "--notify-delays", "1,x"],
                     ["--listen", "127.0.0.1:0", "--data-dir", "/tmp/x", "--secret", "s",
                      "--threads", "0"],
                     ["--bogus"],
                     ["journal"]):
            cp = subprocess.run([PAYSIM_BIN] + args, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, timeout=30,
                                env={k: v for k, v in os.environ.items()
                                     if k != "PAYSIM_SECRET"})
            self.assertEqual(cp.returncode, 2, (args, cp))
        cp = subprocess.run([PAYSIM_BIN, "journal", "--data-dir", "/nonexistent/paysim"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=30)
        self.assertEqual(cp.returncode, 1, cp)


if __name__ == "__main__":
    unittest.main()
