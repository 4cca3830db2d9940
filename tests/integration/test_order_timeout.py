"""Order timeout: [orders] ttl_s.

- an order left unpaid past ttl_s is closed by itself; paying it is refused
  (409 order_closed) and writes nothing;
- a paid order is never closed;
- a charge that succeeds after its order closed (its answer came late) is
  recorded, refunded automatically in full, and the order stays closed: the
  channel's journal shows the charge and its refund, the merchant's balance
  is unchanged, the ledger balanced;
- ttl_s = 0: orders never close.
"""
import time

from harness import PaydTestCase, wait_until
from test_refunds import ledger_check, sandbox_refunds, wait_refund_final

ENV = {"PAYD_ORDERS_TTL_S": "1", "PAYD_ORDERS_CLOSE_INTERVAL_S": "1",
       "PAYD_CHANNEL_SANDBOX_TIMEOUT_MS": "3000"}


class OrderTimeoutTest(PaydTestCase):
    server_env = ENV

    def status(self, oid):
        return self.server.get_order(oid).body["status"]

    def wait_status(self, oid, want):
        return wait_until(lambda: self.status(oid) == want, what="order %s %s" % (oid, want))

    def balance(self):
        r = self.server.request("GET", "/v1/balance")
        return {b["currency"]: b["amount"] for b in r.body["data"]}.get("CNY", 0)

    def test_unpaid_order_closes_and_refuses_payment(self):
        s = self.server
        order = s.create_order(amount=500)
        self.assertEqual(order["status"], "pending_payment")
        self.wait_status(order["id"], "closed")
        counts = s.table_counts()
        self.assertError(s.pay(order["id"], "ok"), 409, "conflict", "order_closed", "order_id")
        self.assertEqual(s.table_counts(), counts)

    def test_paid_order_stays_paid(self):
        s = self.server
        order = s.create_order(amount=500)
        p = s.wait_payment_final(s.pay(order["id"], "ok").body["id"])
        self.assertEqual(p["status"], "succeeded")
        time.sleep(2.5)
        self.assertEqual(self.status(order["id"]), "paid")

    def test_late_charge_is_refunded(self):
        s = self.server
        before = self.balance()
        order = s.create_order(amount=700)
        # `unknown`: charged at once, but the answer never comes; the worker
        # learns it by query after the 3 s timeout, when the order (1 s)
        # has closed.
        r = s.pay(order["id"], "unknown")
        self.assertEqual(r.status, 202, r)
        self.wait_status(order["id"], "closed")
        p = s.wait_payment_final(r.body["id"])
        self.assertEqual(p["status"], "succeeded", p)
        self.assertEqual(self.status(order["id"]), "closed")

        refunds = s.request("GET", "/v1/refunds?payment_id=" + p["id"]).body["data"]
        self.assertEqual(len(refunds), 1, refunds)
        rf = refunds[0]
        self.assertEqual((rf["amount"], rf["automatic"]), (700, True), rf)
        self.assertTrue(rf["reason"].startswith("order_closed"), rf)
        done = wait_refund_final(s, rf["id"])
        self.assertEqual(done["status"], "succeeded", done)
        at_channel = [x for x in sandbox_refunds(s) if x["serial_no"] == p["serial_no"]]
        self.assertEqual([(x["refund_no"], x["amount"]) for x in at_channel],
                         [(rf["refund_no"], 700)])
        self.assertEqual(self.balance(), before)
        self.assertEqual(self.status(order["id"]), "closed")
        ledger_check(self, s)


class NoTimeoutTest(PaydTestCase):
    server_env = {"PAYD_ORDERS_TTL_S": "0", "PAYD_ORDERS_CLOSE_INTERVAL_S": "1"}

    def test_ttl_zero_never_closes(self):
        order = self.server.create_order(amount=500)
        time.sleep(2.5)
        self.assertEqual(self.server.get_order(order["id"]).body["status"], "pending_payment")


if __name__ == "__main__":
    import unittest
    unittest.main()
