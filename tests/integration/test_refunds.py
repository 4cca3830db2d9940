"""Refunds: POST /v1/refunds, GET /v1/refunds/{id}, GET /v1/refunds?payment_id=.

- a partial then a full refund: each ends succeeded, the order turns
  partially_refunded then refunded, the ledger gives the money back (the
  balance falls to 0, every transfer sums to zero) and the channel's journal
  holds each refund once;
- more than is left is refused (400 amount_exceeds_refundable, nothing
  written), as is a refund of a payment that has not succeeded (409);
- twenty concurrent refunds of 150 on a payment of 1000: six accepted,
  fourteen refused, 900 refunded at the channel, never more;
- Idempotency-Key: a retry gets the first answer, another body 422;
- bad input is refused with the field named and writes nothing;
- another merchant's payment or refund is not found;
- kill -9 with refunds in flight: after a restart every refund is final,
  each exactly once at the channel, the ledger balanced;
- through paysim (the http channel), refunds whose answers are lost, hang
  or fail end succeeded, each exactly once in paysim's journal.
"""
import concurrent.futures
import time

import harness
from harness import PaydTestCase, unique, wait_until
from paysim import SECRET, Paysim

REFUND_FIELDS = {"id", "payment_id", "order_id", "amount", "currency", "channel", "status",
                 "reason", "refund_no", "automatic", "created_at", "updated_at"}


def paid_order(s, amount=1000):
    order = s.create_order(amount=amount)
    r = s.pay(order["id"], "ok")
    assert r.status == 202, r
    p = s.wait_payment_final(r.body["id"])
    assert p["status"] == "succeeded", p
    return order, p


def refund(s, payment_id, amount, reason=None, idem=None, key=harness._DEFAULT):
    body = {"payment_id": payment_id, "amount": amount}
    if reason is not None:
        body["reason"] = reason
    return s.request("POST", "/v1/refunds", body, idem=idem, key=key)


def wait_refund_final(s, rid):
    def final():
        r = s.request("GET", "/v1/refunds/" + rid)
        if r.status != 200:
            raise AssertionError("GET /v1/refunds/%s -> %r" % (rid, r))
        return r.body if r.body["status"] in ("succeeded", "failed") else None
    return wait_until(final, what="refund %s to be final" % rid)


def sandbox_refunds(s):
    rows, cols = harness.db_query(s.sandbox_path, "SELECT * FROM refunds")
    return [dict(zip(cols, r)) for r in rows]


def ledger_check(test, s):
    """Every transfer sums to zero."""
    rows = s.db_rows("SELECT transfer_id, sum(amount) FROM ledger_entries "
                     "GROUP BY transfer_id HAVING sum(amount) <> 0")[0]
    test.assertEqual(rows, [])


class RefundsTest(PaydTestCase):
    def balance(self, key=harness._DEFAULT):
        r = self.server.request("GET", "/v1/balance", key=key)
        return {b["currency"]: b["amount"] for b in self.assertStatus(r, 200)["data"]}

    def test_partial_then_full(self):
        s = self.server
        before = self.balance().get("CNY", 0)
        order, p = paid_order(s, 1000)
        self.assertEqual(self.balance()["CNY"], before + 1000)

        r = refund(s, p["id"], 300, reason="customer request")
        rf = self.assertStatus(r, 202)
        self.assertEqual(set(rf), REFUND_FIELDS, rf)
        self.assertTrue(rf["id"].startswith("re_"), rf)
        self.assertEqual((rf["payment_id"], rf["order_id"], rf["amount"], rf["currency"],
                          rf["channel"], rf["status"], rf["reason"], rf["automatic"]),
                         (p["id"], order["id"], 300, "CNY", "sandbox", "processing",
                          "customer request", False))
        done = wait_refund_final(s, rf["id"])
        self.assertEqual(done["status"], "succeeded", done)
        self.assertTrue(done["channel_refund_id"].startswith("sbr_"), done)
        self.assertEqual(s.get_order(order["id"]).body["status"], "partially_refunded")
        self.assertEqual(self.balance()["CNY"], before + 700)

        rf2 = self.assertStatus(refund(s, p["id"], 700), 202)
        self.assertIsNone(rf2["reason"])
        self.assertEqual(wait_refund_final(s, rf2["id"])["status"], "succeeded")
        self.assertEqual(s.get_order(order["id"]).body["status"], "refunded")
        self.assertEqual(self.balance()["CNY"], before)

        listed = self.assertStatus(s.request("GET", "/v1/refunds?payment_id=" + p["id"]), 200)
        self.assertEqual([x["id"] for x in listed["data"]], [rf["id"], rf2["id"]])
        at_channel = [x for x in sandbox_refunds(s) if x["serial_no"] == p["serial_no"]]
        self.assertEqual(sorted((x["refund_no"], x["amount"]) for x in at_channel),
                         sorted([(rf["refund_no"], 300), (rf2["refund_no"], 700)]))
        ledger_check(self, s)
        # Nothing is left to refund.
        self.assertError(refund(s, p["id"], 1), 400, "invalid_request_error",
                         "amount_exceeds_refundable", "amount")

    def test_more_than_left_refused_and_nothing_written(self):
        s = self.server
        _, p = paid_order(s, 500)
        counts = s.table_counts()
        r = refund(s, p["id"], 501)
        self.assertError(r, 400, "invalid_request_error", "amount_exceeds_refundable", "amount")
        self.assertIn("500", r.error["message"])
        self.assertEqual(s.table_counts(), counts)

    def test_payment_not_succeeded(self):
        s = self.server
        order = s.create_order(amount=500)
        failed = s.wait_payment_final(s.pay(order["id"], "declined").body["id"])
        self.assertEqual(failed["status"], "failed")
        counts = s.table_counts()
        self.assertError(refund(s, failed["id"], 100), 409, "conflict",
                         "payment_not_refundable", "payment_id")
        self.assertEqual(s.table_counts(), counts)

    def test_concurrent_refunds_never_exceed_captured(self):
        s = self.server
        order, p = paid_order(s, 1000)

        def one(i):
            return refund(s, p["id"], 150, idem=unique("c%d" % i))
        with concurrent.futures.ThreadPoolExecutor(20) as pool:
            answers = list(pool.map(one, range(20)))
        statuses = sorted(r.status for r in answers)
        self.assertEqual(statuses, [202] * 6 + [400] * 14, answers)
        for r in answers:
            if r.status == 400:
                self.assertEqual(r.error["code"], "amount_exceeds_refundable")
        for r in answers:
            if r.status == 202:
                self.assertEqual(wait_refund_final(s, r.body["id"])["status"], "succeeded")
        at_channel = [x for x in sandbox_refunds(s) if x["serial_no"] == p["serial_no"]]
        self.assertEqual(sum(x["amount"] for x in at_channel), 900)
        self.assertEqual(len(at_channel), 6)
        self.assertEqual(s.get_order(order["id"]).body["status"], "partially_refunded")
        # The store's own totals agree.
        self.assertEqual(s.db_rows("SELECT captured, reserved, refunded FROM refund_totals "
                                   "WHERE payment_id = ?", (p["id"],))[0],
                         [(1000, 900, 900)])
        ledger_check(self, s)

    def test_idempotency_key(self):
        s = self.server
        _, p = paid_order(s, 1000)
        key = unique("rk")
        first = refund(s, p["id"], 100, idem=key)
        self.assertStatus(first, 202)
        again = refund(s, p["id"], 100, idem=key)
        self.assertStatus(again, 202)
        self.assertEqual(again.body, first.body)
        self.assertEqual(again.header("Idempotent-Replayed"), "true")
        self.assertError(refund(s, p["id"], 200, idem=key), 422, "idempotency_error",
                         "idempotency_key_reused", "Idempotency-Key")
        wait_refund_final(s, first.body["id"])
        listed = s.request("GET", "/v1/refunds?payment_id=" + p["id"]).body["data"]
        self.assertEqual(len(listed), 1, listed)
        # After it succeeded, the retry still gets the first answer.
        self.assertEqual(refund(s, p["id"], 100, idem=key).body, first.body)

    def test_bad_input_writes_nothing(self):
        s = self.server
        _, p = paid_order(s, 1000)
        counts = s.table_counts()
        cases = [
            ({"amount": 1}, "payment_id"),
            ({"payment_id": p["id"]}, "amount"),
            ({"payment_id": p["id"], "amount": 0}, "amount"),
            ({"payment_id": p["id"], "amount": -5}, "amount"),
            ({"payment_id": p["id"], "amount": "100"}, "amount"),
            ({"payment_id": p["id"], "amount": 1.5}, "amount"),
            ({"payment_id": p["id"], "amount": 10**20}, "amount"),
            ({"payment_id": p["id"], "amount": 1, "reason": "x" * 257}, "reason"),
            ({"payment_id": p["id"], "amount": 1, "reason": 7}, "reason"),
            ({"payment_id": p["id"], "amount": 1, "currency": "CNY"}, "currency"),
            ({"payment_id": 5, "amount": 1}, "payment_id"),
        ]
        for body, param in cases:
            r = s.request("POST", "/v1/refunds", body)
            self.assertEqual(r.status, 400, (body, r))
            self.assertEqual(r.error.get("param"), param, (body, r))
        r = s.request("POST", "/v1/refunds", b"{not json")
        self.assertEqual(r.status, 400, r)
        self.assertError(refund(s, "pay_nope", 1), 404, "not_found", "resource_missing", "payment_id")
        self.assertEqual(s.table_counts(), counts)
        self.assertError(s.request("GET", "/v1/refunds"), 400, "invalid_request_error",
                         "parameter_missing", "payment_id")
        self.assertError(s.request("GET", "/v1/refunds/re_nope"), 404, "not_found",
                         "resource_missing", None)

    def test_other_merchant_sees_nothing(self):
        s = self.server
        _, p = paid_order(s, 1000)
        rf = self.assertStatus(refund(s, p["id"], 100), 202)
        other = s.add_merchant(unique("m"))
        self.assertEqual(refund(s, p["id"], 100, key=other).status, 404)
        self.assertEqual(s.request("GET", "/v1/refunds/" + rf["id"], key=other).status, 404)
        self.assertEqual(
            s.request("GET", "/v1/refunds?payment_id=" + p["id"], key=other).status, 404)
        wait_refund_final(s, rf["id"])


class RefundCrashTest(PaydTestCase):
    shared_server = False

    def test_kill9_with_refunds_in_flight(self):
        s = self.start_server()
        pays = [paid_order(s, 1000)[1] for _ in range(10)]
        accepted = []
        for p in pays:
            for amount in (400, 600):
                r = refund(s, p["id"], amount)
                self.assertEqual(r.status, 202, r)
                accepted.append(r.body)
        s.kill9()
        s.restart()
        for rf in accepted:
            self.assertEqual(wait_refund_final(s, rf["id"])["status"], "succeeded")
        at_channel = sandbox_refunds(s)
        nos = [x["refund_no"] for x in at_channel]
        for rf in accepted:
            self.assertEqual(nos.count(rf["refund_no"]), 1, rf)
        for p in pays:
            self.assertEqual(s.get_order(p["order_id"]).body["status"], "refunded")
        ledger_check(self, s)


class RefundPaysimTest(PaydTestCase):
    """Refunds through the http channel, under paysim's faults."""
    shared_server = False
    ENV = {"PAYD_BREAKER_MIN_CALLS": "1000000", "PAYD_WORKER_RETRY_BASE_MS": "50",
           "PAYD_WORKER_RETRY_MAX_MS": "500"}

    def setUp(self):
        super().setUp()
        self.paysim = Paysim()
        self.addCleanup(self.paysim.cleanup)
        self.paysim.start()
        config = ("[channel.psp]\ntype = http\nurl = http://127.0.0.1:%d\nsecret = %s\n"
                  "timeout_ms = 500\n" % (self.paysim.port, SECRET))
        self.s = self.start_server(config=config, env=self.ENV, fast=False)

    def paid(self, amount=1000):
        order = self.s.create_order(amount=amount)
        r = self.s.pay(order["id"], "ok", channel="psp")
        self.assertEqual(r.status, 202, r)
        p = self.s.wait_payment_final(r.body["id"])
        self.assertEqual(p["status"], "succeeded", p)
        return p

    def refunds_at_paysim(self, refund_no):
        return [x for x in self.paysim.journal()["refunds"] if x["out_refund_no"] == refund_no]

    def under_faults(self, faults):
        p = self.paid()
        self.paysim.set_faults(dict(faults, scope=["refund"]))
        rf = self.assertStatus(refund(self.s, p["id"], 250), 202)
        time.sleep(1.0)
        self.paysim.set_faults({})
        done = wait_refund_final(self.s, rf["id"])
        self.assertEqual(done["status"], "succeeded", done)
        rows = self.refunds_at_paysim(rf["refund_no"])
        self.assertEqual(len(rows), 1, rows)
        self.assertEqual((rows[0]["amount"], rows[0]["out_trade_no"]), (250, p["serial_no"]))
        self.assertEqual(done["channel_refund_id"], rows[0]["refund_id"])
        ledger_check(self, self.s)

    def test_ok(self):
        self.under_faults({})

    def test_lost_answer(self):
        self.under_faults({"lost_answer_rate": 1})

    def test_hang(self):
        self.under_faults({"hang_rate": 1})

    def test_errors(self):
        self.under_faults({"error_rate": 1})

    def test_outage(self):
        self.under_faults({"outage": True})

    def test_refused_by_channel_fails_and_frees_the_amount(self):
        # The trade was refunded at paysim behind payd's back: payd's refund
        # of the full amount is refused there, fails, and its amount is
        # refundable again.
        p = self.paid()
        r = self.paysim.refund(p["serial_no"], "outside-1", 1000)
        self.assertEqual(r.status, 200, r)
        rf = self.assertStatus(refund(self.s, p["id"], 1000), 202)
        done = wait_refund_final(self.s, rf["id"])
        self.assertEqual((done["status"], done["failure"]["code"]),
                         ("failed", "refund_exceeds_charge"), done)
        self.assertEqual(self.s.get_order(p["order_id"]).body["status"], "paid")
        self.assertEqual(self.s.db_rows("SELECT reserved, refunded FROM refund_totals "
                                        "WHERE payment_id = ?", (p["id"],))[0], [(0, 0)])
        self.assertStatus(refund(self.s, p["id"], 1000), 202)


if __name__ == "__main__":
    import unittest
    unittest.main()
