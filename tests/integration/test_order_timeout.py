"""Order timeout: [orders] ttl_s.

- an order left unpaid past ttl_s is closed by itself; paying it is refused
  (409 order_closed) and writes nothing;
- a paid order is never closed;
- a charge that succeeds after its order closed (its answer came late) is
  recorded, refunded automatically in full, and the order stays closed: the
  channel's journal shows the charge and its refund, the merchant's balance
  is unchanged, the ledger balanced;
- a payment still waiting in the queue when its order closes is never
  charged: it fails order_closed;
- a payment whose earlier attempt may have reached a remote channel is
  settled by closing the trade there: closed (never charged) it fails
  order_closed, charged it is a late charge, refunded;
- ttl_s = 0: orders never close.
"""
import time

import harness
from harness import PaydTestCase, wait_until
from paysim import SECRET, Paysim
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


class QueuedWhenClosedTest(PaydTestCase):
    # One charge per 5 s: the payments behind the first wait in the queue
    # past their orders' 1 s.
    server_env = dict(ENV, PAYD_CHANNEL_SANDBOX_RATE="0.2",
                      PAYD_CHANNEL_SANDBOX_PACE_MAX_WAIT_MS="50")

    def test_queued_payment_never_charged(self):
        s = self.server
        pays = []
        for _ in range(4):
            order = s.create_order(amount=300)
            r = s.pay(order["id"], "ok")
            self.assertEqual(r.status, 202, r)
            pays.append(r.body)
        finals = [s.wait_payment_final(p["id"], timeout=30) for p in pays]
        closed = [p for p in finals if p["status"] == "failed"]
        self.assertGreaterEqual(len(closed), 2, finals)
        charged = s.succeeded_charge_serials()
        for p in closed:
            self.assertEqual(p["failure"]["code"], "order_closed", p)
            self.assertNotIn(p["serial_no"], charged)
            self.assertEqual(s.request("GET", "/v1/refunds?payment_id=" + p["id"])
                             .body["data"], [])
        for p in finals:
            if p["status"] == "succeeded":
                self.assertEqual(charged.count(p["serial_no"]), 1)


class RemoteCloseTest(PaydTestCase):
    shared_server = False

    def setUp(self):
        super().setUp()
        self.paysim = Paysim()
        self.addCleanup(self.paysim.cleanup)
        self.paysim.start()
        config = ("[channel.psp]\ntype = http\nurl = http://127.0.0.1:%d\nsecret = %s\n"
                  "timeout_ms = 300\n" % (self.paysim.port, SECRET))
        env = {"PAYD_ORDERS_TTL_S": "1", "PAYD_ORDERS_CLOSE_INTERVAL_S": "1",
               "PAYD_BREAKER_MIN_CALLS": "1000000", "PAYD_WORKER_RETRY_BASE_MS": "3500",
               "PAYD_WORKER_MAX_ATTEMPTS": "10"}
        self.s = self.start_server(config=config, env=env, fast=False)

    def pay(self, amount):
        order = self.s.create_order(amount=amount)
        r = self.s.pay(order["id"], "ok", channel="psp")
        self.assertEqual(r.status, 202, r)
        return order, r.body

    def test_never_charged_is_closed_at_the_channel(self):
        # Every charge attempt fails (nothing charged); after the order
        # closes the worker closes the trade and the payment fails.
        self.paysim.set_faults({"scope": ["charge"], "error_rate": 1})
        order, p = self.pay(400)
        wait_until(lambda: self.s.get_order(order["id"]).body["status"] == "closed",
                   what="the order to close")
        self.paysim.set_faults({})
        final = self.s.wait_payment_final(p["id"], timeout=30)
        self.assertEqual((final["status"], final["failure"]["code"]), ("failed", "order_closed"))
        journal = self.paysim.journal()
        self.assertEqual(self.paysim.charges_of(p["serial_no"], journal), [])
        self.assertIn(p["serial_no"], [t["out_trade_no"] for t in journal["closed_trades"]])

    def test_charged_is_a_late_charge(self):
        # The charge lands but its answer is lost; by the next delivery the
        # order has closed: closing the trade shows the charge, which is
        # recorded and refunded.
        self.paysim.set_faults({"scope": ["charge"], "lost_answer_rate": 1})
        order, p = self.pay(600)
        wait_until(lambda: self.paysim.charges_of(p["serial_no"]), what="the charge")
        self.paysim.set_faults({})
        final = self.s.wait_payment_final(p["id"], timeout=30)
        self.assertEqual(final["status"], "succeeded", final)
        self.assertEqual(self.s.get_order(order["id"]).body["status"], "closed")
        refunds = self.s.request("GET", "/v1/refunds?payment_id=" + p["id"]).body["data"]
        self.assertEqual([(r["amount"], r["automatic"]) for r in refunds], [(600, True)])
        done = wait_refund_final(self.s, refunds[0]["id"])
        self.assertEqual(done["status"], "succeeded", done)
        self.assertEqual(len(self.paysim.charges_of(p["serial_no"])), 1)
        ledger_check(self, self.s)


class NoTimeoutTest(PaydTestCase):
    server_env = {"PAYD_ORDERS_TTL_S": "0", "PAYD_ORDERS_CLOSE_INTERVAL_S": "1"}

    def test_ttl_zero_never_closes(self):
        order = self.server.create_order(amount=500)
        time.sleep(2.5)
        self.assertEqual(self.server.get_order(order["id"]).body["status"], "pending_payment")


if __name__ == "__main__":
    import unittest
    unittest.main()
