"""
Racing: many clients paying one order at the same moment.
"""

import unittest

from harness import PaydTestCase, fire, unique


def phantom_acks(server, accepted):
    """The 202 answers whose payment does not exist (GET is not 200)."""
    out = []
    for r in accepted:
        g = server.get_payment(r.body["id"])
        if g.status != 200:
            out.append((r.body["id"], g.status))
    return out


class RacingTest(PaydTestCase):
    server_env = {"PAYD_CHANNEL_SANDBOX_TIMEOUT_MS": "3000"}
    N = 50

    def check_one_charge(self, order, payment_id):
        s = self.server
        final = s.wait_payment_final(payment_id)
        self.assertEqual(final["status"], "succeeded", final)
        self.assertEqual(s.get_order(order["id"]).body["status"], "paid")
        data = s.list_payments(order["id"]).body["data"]
        self.assertEqual([p["id"] for p in data], [payment_id])
        rows = s.db("SELECT id, status FROM payments WHERE order_id = ?", (order["id"],))
        self.assertEqual(rows, [(payment_id, "succeeded")])
        serial = final["serial_no"]
        charges = [c for c in s.charges() if c["serial_no"] == serial]
        self.assertEqual(len(charges), 1, charges)
        self.assertEqual(s.succeeded_charge_serials().count(serial), 1)
        entries = s.db("SELECT amount FROM ledger_entries")
        self.assertEqual(sum(a for (a,) in entries), 0)

    def assert_one_accepted(self, results):
        """Exactly one racer got 202 (and that payment exists); every other
        got 409 because the order is taken. Returns the 202 answer."""
        s = self.server
        for r in results:
            self.assertNotIsInstance(r, Exception, r)
        accepted = [r for r in results if r.status == 202]
        self.assertEqual(phantom_acks(s, accepted), [], "payments answered 202 that do not exist")
        self.assertEqual(len(accepted), 1, sorted(r.status for r in results))
        for r in results:
            if r.status != 202:
                self.assertEqual(r.status, 409, r)
                self.assertEqual(r.error["type"], "conflict")
                self.assertIn(r.error["code"], ("payment_in_progress", "order_already_paid"), r)
        return accepted[0]

    def test_different_keys_one_order(self):
        s = self.server
        order = s.create_order(amount=8888)
        charges_before = len(s.charges())
        ledger_before = s.db_scalar("SELECT count(*) FROM ledger_entries")
        results = fire(self.N, lambda i: s.pay(order["id"], "ok", idem=unique("race%d" % i)))
        accepted = self.assert_one_accepted(results)
        self.check_one_charge(order, accepted.body["id"])
        self.assertEqual(len(s.charges()), charges_before + 1)
        self.assertEqual(s.db_scalar("SELECT count(*) FROM ledger_entries"), ledger_before + 2)

    def test_different_keys_slow_one_order(self):
        """With `slow`, all the racers arrive while the winner processes."""
        s = self.server
        order = s.create_order(amount=8889)
        results = fire(self.N, lambda i: s.pay(order["id"], "slow", idem=unique("rslow%d" % i)))
        accepted = self.assert_one_accepted(results)
        self.check_one_charge(order, accepted.body["id"])

    def test_without_keys_one_order(self):
        s = self.server
        order = s.create_order(amount=8890)
        results = fire(self.N, lambda i: s.pay(order["id"], "ok"))
        for r in results:
            self.assertNotIsInstance(r, Exception, r)
        accepted = [r for r in results if r.status == 202]
        self.assertEqual(phantom_acks(s, accepted), [], "payments answered 202 that do not exist")
        self.assertEqual(len(accepted), 1, sorted(r.status for r in results))
        self.check_one_charge(order, accepted[0].body["id"])

    def test_one_shared_key(self):
        s = self.server
        order = s.create_order(amount=9999)
        key = unique("shared")
        results = fire(self.N, lambda i: s.pay(order["id"], "ok", idem=key))
        for r in results:
            self.assertNotIsInstance(r, Exception, r)
        accepted = [r for r in results if r.status == 202]
        self.assertEqual(phantom_acks(s, accepted), [], "payments answered 202 that do not exist")
        self.assertGreaterEqual(len(accepted), 1)
        self.assertEqual(len({r.body["id"] for r in accepted}), 1)
        self.assertEqual(len({r.raw for r in accepted}), 1)
        for r in results:
            if r.status != 202:
                self.assertEqual(r.status, 409, r)
                self.assertIn(r.error["code"], ("idempotency_key_in_use", "payment_in_progress"),
                              r)
        self.check_one_charge(order, accepted[0].body["id"])

    def test_many_orders_at_once(self):
        """20 orders paid at once, 5 racers each: every order paid exactly once."""
        s = self.server
        orders = [s.create_order(amount=100 + i) for i in range(20)]
        results = fire(100, lambda i: (i % 20, s.pay(orders[i % 20]["id"], "ok",
                                                      idem=unique("many%d" % i))))
        won = {}
        for res in results:
            self.assertNotIsInstance(res, Exception, res)
            idx, r = res
            if r.status == 202:
                self.assertEqual(phantom_acks(s, [r]), [], "a 202 for a payment that does not exist")
                self.assertNotIn(idx, won, "two payments accepted for order %d" % idx)
                won[idx] = r.body["id"]
            else:
                self.assertEqual(r.status, 409, r)
                self.assertIn(r.error["code"], ("payment_in_progress", "order_already_paid"))
        self.assertEqual(sorted(won), list(range(20)))
        for idx, pid in won.items():
            self.check_one_charge(orders[idx], pid)


if __name__ == "__main__":
    unittest.main()
