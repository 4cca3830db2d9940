"""
Payments through the sandbox channel: every method's whole flow, the list,
GET, idempotent replay, and the ledger/balance they produce.
"""

import unittest

from harness import PaydTestCase, unique

PAYMENT_FIELDS = {"id", "order_id", "amount", "currency", "channel", "method", "status",
                  "serial_no", "created_at", "updated_at"}


class PaymentsTest(PaydTestCase):
    # The default timeout: `slow` (2 s) answers before it, `unknown` waits it out.
    server_env = {"PAYD_CHANNEL_SANDBOX_TIMEOUT_MS": "3000"}

    # ---- helpers ----------------------------------------------------------------

    def check_accepted(self, r, order, method):
        p = self.assertStatus(r, 202)
        self.assertTrue((r.header("Content-Type") or "").startswith("application/json"))
        self.assertTrue(PAYMENT_FIELDS - {"updated_at"} <= set(p), p)
        self.assertTrue(p["id"].startswith("pay_") and len(p["id"]) > 4, p)
        self.assertEqual(p["order_id"], order["id"])
        self.assertEqual(p["amount"], order["amount"])
        self.assertEqual(p["currency"], order["currency"])
        self.assertEqual(p["channel"], "sandbox")
        self.assertEqual(p["method"], method)
        self.assertEqual(p["status"], "processing")
        self.assertIsInstance(p["serial_no"], str)
        self.assertTrue(p["serial_no"], p)
        self.assertRFC3339(p["created_at"])
        self.assertNotIn("channel_txn_id", p)
        self.assertNotIn("failure", p)
        return p

    def check_succeeded(self, p, accepted):
        self.assertEqual(p["status"], "succeeded", p)
        self.assertIsInstance(p.get("channel_txn_id"), str, p)
        self.assertTrue(p["channel_txn_id"], p)
        self.assertNotIn("failure", p)
        self.check_same_payment(p, accepted)

    def check_failed(self, p, accepted, code):
        self.assertEqual(p["status"], "failed", p)
        self.assertIsInstance(p.get("failure"), dict, p)
        self.assertEqual(p["failure"].get("code"), code, p)
        self.assertIsInstance(p["failure"].get("message"), str, p)
        self.assertTrue(p["failure"]["message"], p)
        self.assertNotIn("channel_txn_id", p)
        self.check_same_payment(p, accepted)

    def check_same_payment(self, p, accepted):
        self.assertTrue(PAYMENT_FIELDS <= set(p), p)
        for f in ("id", "order_id", "amount", "currency", "channel", "method", "serial_no",
                  "created_at"):
            self.assertEqual(p[f], accepted[f], f)
        self.assertRFC3339(p["updated_at"])
        self.assertGreaterEqual(p["updated_at"], p["created_at"])

    def charges_for(self, serial):
        return [c for c in self.server.charges() if c.get("serial_no") == serial]

    def order_status(self, oid):
        r = self.server.get_order(oid)
        return self.assertStatus(r, 200)["status"]

    # ---- each sandbox method ------------------------------------------------------

    def test_ok(self):
        order = self.server.create_order(amount=1999)
        r = self.server.pay(order["id"], "ok", idem=unique("ok"))
        acc = self.check_accepted(r, order, "ok")
        p = self.server.wait_payment_final(acc["id"])
        self.check_succeeded(p, acc)
        self.assertEqual(self.order_status(order["id"]), "paid")
        self.assertEqual(self.server.get_order(order["id"]).body["amount"], 1999)
        self.assertEqual(self.server.succeeded_charge_serials().count(acc["serial_no"]), 1)
        self.assertEqual(len(self.charges_for(acc["serial_no"])), 1)
        rows = self.server.db("SELECT id, order_id, status, amount, currency FROM payments "
                              "WHERE id = ?", (acc["id"],))
        self.assertEqual(rows, [(acc["id"], order["id"], "succeeded", 1999, "CNY")])

    def test_declined_then_paid_again(self):
        order = self.server.create_order(amount=2500, currency="USD")
        r = self.server.pay(order["id"], "declined")
        acc = self.check_accepted(r, order, "declined")
        p = self.server.wait_payment_final(acc["id"])
        self.check_failed(p, acc, "card_declined")
        self.assertEqual(self.order_status(order["id"]), "pending_payment")
        self.assertEqual(self.server.succeeded_charge_serials().count(acc["serial_no"]), 0)

        r2 = self.server.pay(order["id"], "ok")
        acc2 = self.check_accepted(r2, order, "ok")
        self.assertNotEqual(acc2["id"], acc["id"])
        self.assertNotEqual(acc2["serial_no"], acc["serial_no"])
        self.check_succeeded(self.server.wait_payment_final(acc2["id"]), acc2)
        self.assertEqual(self.order_status(order["id"]), "paid")

        data = self.assertStatus(self.server.list_payments(order["id"]), 200)["data"]
        self.assertEqual([x["id"] for x in data], [acc["id"], acc2["id"]])   # oldest first
        self.assertEqual([x["status"] for x in data], ["failed", "succeeded"])
        self.assertEqual(data[0]["failure"]["code"], "card_declined")

    def test_slow(self):
        order = self.server.create_order(amount=3000)
        r = self.server.pay(order["id"], "slow")
        acc = self.check_accepted(r, order, "slow")
        # About 2 s in the channel: still processing right after acceptance.
        now = self.assertStatus(self.server.get_payment(acc["id"]), 200)
        self.assertEqual(now["status"], "processing")
        self.assertEqual(self.order_status(order["id"]), "pending_payment")
        p = self.server.wait_payment_final(acc["id"])
        self.check_succeeded(p, acc)
        self.assertEqual(self.order_status(order["id"]), "paid")
        self.assertEqual(len(self.charges_for(acc["serial_no"])), 1)

    def test_unknown_resolved_by_query(self):
        order = self.server.create_order(amount=4100)
        r = self.server.pay(order["id"], "unknown")
        acc = self.check_accepted(r, order, "unknown")
        p = self.server.wait_payment_final(acc["id"])
        self.check_succeeded(p, acc)
        self.assertEqual(self.order_status(order["id"]), "paid")
        # Charged exactly once: the timeout was followed by queries, not charges.
        self.assertEqual(len(self.charges_for(acc["serial_no"])), 1)
        self.assertEqual(self.server.succeeded_charge_serials().count(acc["serial_no"]), 1)

    def test_error_fails_with_channel_error(self):
        order = self.server.create_order(amount=5200)
        r = self.server.pay(order["id"], "error")
        acc = self.check_accepted(r, order, "error")
        p = self.server.wait_payment_final(acc["id"])
        self.check_failed(p, acc, "channel_error")
        self.assertEqual(self.order_status(order["id"]), "pending_payment")
        self.assertEqual(self.server.succeeded_charge_serials().count(acc["serial_no"]), 0)
        # Payable again.
        r2 = self.server.pay(order["id"], "ok")
        acc2 = self.check_accepted(r2, order, "ok")
        self.check_succeeded(self.server.wait_payment_final(acc2["id"]), acc2)
        self.assertEqual(self.order_status(order["id"]), "paid")

    # ---- GET and list -------------------------------------------------------------

    def test_get_and_list(self):
        order = self.server.create_order(amount=10)
        self.assertEqual(self.assertStatus(self.server.list_payments(order["id"]), 200),
                         {"data": []})
        ids = []
        for method in ("declined", "error", "declined", "ok"):
            r = self.server.pay(order["id"], method)
            self.assertStatus(r, 202)
            ids.append(r.body["id"])
            self.server.wait_payment_final(r.body["id"])
        data = self.assertStatus(self.server.list_payments(order["id"]), 200)["data"]
        self.assertEqual([p["id"] for p in data], ids)
        self.assertEqual([p["method"] for p in data], ["declined", "error", "declined", "ok"])
        created = [p["created_at"] for p in data]
        self.assertEqual(created, sorted(created))
        for p in data:
            self.assertEqual(self.assertStatus(self.server.get_payment(p["id"]), 200), p)
        self.assertEqual(len({p["serial_no"] for p in data}), 4)

    def test_list_other_order_is_not_mixed_in(self):
        o1 = self.server.create_order()
        o2 = self.server.create_order()
        p1 = self.server.pay(o1["id"], "ok").body
        self.server.wait_payment_final(p1["id"])
        self.assertEqual(self.server.list_payments(o2["id"]).body, {"data": []})
        self.assertEqual([p["id"] for p in self.server.list_payments(o1["id"]).body["data"]],
                         [p1["id"]])

    # ---- idempotency ----------------------------------------------------------------

    def test_replay_identical(self):
        order = self.server.create_order(amount=777)
        key = unique("replay")
        first = self.server.pay(order["id"], "ok", idem=key)
        acc = self.check_accepted(first, order, "ok")
        self.assertNotEqual((first.header("Idempotent-Replayed") or "").lower(), "true")
        self.server.wait_payment_final(acc["id"])
        for _ in range(2):
            again = self.server.pay(order["id"], "ok", idem=key)
            self.assertEqual(again.status, 202, again)
            self.assertEqual(again.header("Idempotent-Replayed"), "true")
            self.assertEqual(again.raw, first.raw)          # byte for byte: the first answer
        self.assertEqual(len(self.server.list_payments(order["id"]).body["data"]), 1)
        self.assertEqual(len(self.charges_for(acc["serial_no"])), 1)

    def test_replay_while_processing(self):
        order = self.server.create_order(amount=778)
        key = unique("replay-slow")
        first = self.server.pay(order["id"], "slow", idem=key)
        self.assertStatus(first, 202)
        again = self.server.pay(order["id"], "slow", idem=key)
        self.assertEqual(again.status, 202, again)
        self.assertEqual(again.header("Idempotent-Replayed"), "true")
        self.assertEqual(again.raw, first.raw)
        self.server.wait_payment_final(first.body["id"])
        self.assertEqual(len(self.server.list_payments(order["id"]).body["data"]), 1)

    def test_key_order_and_whitespace_are_the_same_request(self):
        order = self.server.create_order(amount=779)
        key = unique("canon")
        first = self.server.request(
            "POST", "/v1/payments",
            ('{"order_id":"%s","channel":"sandbox","method":"ok"}' % order["id"]).encode(),
            idem=key)
        self.assertStatus(first, 202)
        variant = ('{\n  "method" : "ok",\t"channel":"sandbox" ,\r\n "order_id": "%s"\n}  '
                   % order["id"]).encode()
        again = self.server.request("POST", "/v1/payments", variant, idem=key)
        self.assertEqual(again.status, 202, again)
        self.assertEqual(again.header("Idempotent-Replayed"), "true")
        self.assertEqual(again.raw, first.raw)
        self.server.wait_payment_final(first.body["id"])
        self.assertEqual(len(self.server.list_payments(order["id"]).body["data"]), 1)

    def test_same_key_different_body_422(self):
        order = self.server.create_order(amount=780)
        other = self.server.create_order(amount=781)
        key = unique("mismatch")
        first = self.server.pay(order["id"], "slow", idem=key)
        self.assertStatus(first, 202)
        before = self.server.table_counts()
        r = self.server.pay(order["id"], "ok", idem=key)
        self.assertError(r, 422, "idempotency_error", "idempotency_key_reused")
        r = self.server.pay(other["id"], "slow", idem=key)
        self.assertError(r, 422, "idempotency_error", "idempotency_key_reused")
        self.server.wait_payment_final(first.body["id"])
        r = self.server.pay(other["id"], "slow", idem=key)
        self.assertError(r, 422, "idempotency_error", "idempotency_key_reused")
        self.assertEqual(self.server.list_payments(other["id"]).body, {"data": []})
        after = self.server.table_counts()
        self.assertEqual(after.get("payments"), before.get("payments"))

    def test_payment_without_key_is_not_replayed(self):
        order = self.server.create_order()
        r1 = self.server.pay(order["id"], "declined")
        self.assertStatus(r1, 202)
        self.server.wait_payment_final(r1.body["id"])
        r2 = self.server.pay(order["id"], "declined")
        self.assertStatus(r2, 202)
        self.assertNotEqual(r1.body["id"], r2.body["id"])
        self.assertNotEqual(r2.header("Idempotent-Replayed"), "true")
        self.server.wait_payment_final(r2.body["id"])

    # ---- ledger and balance ----------------------------------------------------------

    def test_ledger_entries_of_a_payment(self):
        before = self.server.db_scalar("SELECT count(*) FROM ledger_entries")
        order = self.server.create_order(amount=12345, currency="EUR")
        r = self.server.pay(order["id"], "ok")
        self.assertStatus(r, 202)
        self.assertEqual(self.server.wait_payment_final(r.body["id"])["status"], "succeeded")
        rows = self.server.db("SELECT transfer_id, account, amount, currency FROM ledger_entries")
        self.assertEqual(len(rows), before + 2)
        self.assertEqual(self.server.db_scalar("SELECT SUM(amount) FROM ledger_entries"), 0)
        by_transfer = {}
        for t, acct, amount, cur in rows:
            by_transfer.setdefault(t, []).append((acct, amount, cur))
        mine = [e for e in by_transfer.values()
                if sorted(a for _, a, _ in e) == [-12345, 12345]
                and all(c == "EUR" for _, _, c in e)]
        self.assertTrue(mine, by_transfer)
        for entries in by_transfer.values():
            self.assertEqual(sum(a for _, a, _ in entries), 0, entries)

    def test_balance(self):
        key = self.server.add_merchant(unique("bal").replace("-", "_"))
        r = self.server.request("GET", "/v1/balance", key=key)
        self.assertEqual(self.assertStatus(r, 200), {"data": []})
        want = {}
        for amount, cur, method in [(1999, "CNY", "ok"), (500, "USD", "ok"),
                                    (800, "CNY", "declined"), (1, "CNY", "unknown"),
                                    (900, "USD", "error"), (70, "JPY", "slow")]:
            o = self.server.create_order(amount=amount, currency=cur, key=key)
            p = self.server.pay(o["id"], method, key=key)
            self.assertStatus(p, 202)
            final = self.server.wait_payment_final(p.body["id"], key=key)
            if final["status"] == "succeeded":
                want[cur] = want.get(cur, 0) + amount
        self.assertEqual(want, {"CNY": 2000, "USD": 500, "JPY": 70})
        r = self.server.request("GET", "/v1/balance", key=key)
        got = {b["currency"]: b["amount"] for b in self.assertStatus(r, 200)["data"]}
        self.assertEqual(got, want)
        # Demo's balance is its own: all succeeded payments of the store are
        # the demo merchant's and this one's.
        demo = {b["currency"]: b["amount"]
                for b in self.assertStatus(self.server.request("GET", "/v1/balance"),
                                           200)["data"]}
        total = dict(self.server.db("SELECT currency, SUM(amount) FROM payments "
                                    "WHERE status = 'succeeded' GROUP BY currency"))
        for cur in set(total) | set(demo) | set(want):
            self.assertEqual(demo.get(cur, 0) + want.get(cur, 0), total.get(cur, 0), cur)


if __name__ == "__main__":
    unittest.main()
