"""
SIGTERM/SIGINT: the server drains, exits 0, and a restart sees all data.
"""

import signal
import unittest

from harness import PaydTestCase


class ShutdownTest(PaydTestCase):
    shared_server = False

    def test_sigterm_exits_0_and_keeps_data(self):
        s = self.start_server()
        key = s.add_merchant("term_shop")
        orders = [s.create_order(amount=10 + i) for i in range(10)]
        other = s.create_order(amount=55, key=key)
        payments = {}
        for o, method in zip(orders[:4], ("ok", "declined", "unknown", "error")):
            r = s.pay(o["id"], method, idem="term-" + o["id"])
            self.assertStatus(r, 202)
            payments[r.body["id"]] = (r, s.wait_payment_final(r.body["id"]))
        bodies = {o["id"]: s.get_order(o["id"]).body for o in orders}
        self.assertEqual(s.stop(signal.SIGTERM), 0, s.stderr_tail())
        s.start()
        for oid, body in bodies.items():
            self.assertEqual(self.assertStatus(s.get_order(oid), 200), body)
        self.assertEqual(self.assertStatus(s.get_order(other["id"], key=key), 200), other)
        for pid, (first, final) in payments.items():
            self.assertEqual(self.assertStatus(s.get_payment(pid), 200), final)
            # Idempotency keys survive the restart too.
            again = s.pay(final["order_id"], final["method"], idem="term-" + final["order_id"])
            self.assertEqual(again.status, 202, again)
            self.assertEqual(again.header("Idempotent-Replayed"), "true")
            self.assertEqual(again.raw, first.raw)
        self.assertEqual(s.db_scalar("SELECT count(*) FROM orders"), 11)

    def test_sigterm_with_payment_in_flight(self):
        s = self.start_server(env={"PAYD_CHANNEL_SANDBOX_TIMEOUT_MS": "3000"})
        o = s.create_order(amount=1234)
        r = s.pay(o["id"], "slow")
        self.assertStatus(r, 202)
        self.assertEqual(s.get_payment(r.body["id"]).body["status"], "processing")
        self.assertEqual(s.stop(signal.SIGTERM), 0, s.stderr_tail())
        s.start()
        final = s.wait_payment_final(r.body["id"])
        self.assertEqual(final["status"], "succeeded", final)
        self.assertEqual(s.get_order(o["id"]).body["status"], "paid")
        serial = final["serial_no"]
        self.assertEqual(len([c for c in s.charges() if c["serial_no"] == serial]), 1)
        self.assertEqual(s.db_scalar("SELECT SUM(amount) FROM ledger_entries"), 0)
        self.assertEqual(s.db_scalar("SELECT count(*) FROM ledger_entries"), 2)

    def test_sigint_exits_0(self):
        s = self.start_server()
        o = s.create_order()
        self.assertEqual(s.stop(signal.SIGINT), 0, s.stderr_tail())
        s.start()
        self.assertEqual(self.assertStatus(s.get_order(o["id"]), 200), o)

    def test_sigterm_idle_fresh_server(self):
        s = self.start_server()
        self.assertEqual(s.stop(signal.SIGTERM), 0, s.stderr_tail())
        key = s.key
        s.start()
        self.assertEqual(s.key, key)
        self.assertEqual(s.request("GET", "/v1/balance").body, {"data": []})


if __name__ == "__main__":
    unittest.main()
