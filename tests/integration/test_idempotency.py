"""
Idempotency keys: per merchant, purged after [idempotency] ttl_s, and the
in-flight window (409 idempotency_key_in_use).
"""

import time
import unittest

from harness import FINAL_DEADLINE_S, PaydTestCase, fire, unique, wait_until


class IdempotencyPurgeTest(PaydTestCase):
    server_config = "[idempotency]\nttl_s = 1\npurge_interval_s = 1\n"

    def test_key_purged_after_ttl(self):
        s = self.server
        a = s.create_order(amount=100)
        b = s.create_order(amount=200)
        key = unique("ttl")
        first = s.pay(a["id"], "ok", idem=key)
        self.assertStatus(first, 202)
        # Within the TTL the key is bound to the first request.
        early = s.pay(b["id"], "ok", idem=key)
        self.assertError(early, 422, "idempotency_error", "idempotency_key_reused")
        self.assertEqual(s.wait_payment_final(first.body["id"])["status"], "succeeded")

        answers = []

        def accepted_as_new():
            r = s.pay(b["id"], "ok", idem=key)
            answers.append(r.status)
            if r.status == 422:
                return None
            return r

        r = wait_until(accepted_as_new, timeout=FINAL_DEADLINE_S, interval=0.2,
                       what="the purged key to be accepted as new")
        self.assertEqual(r.status, 202, r)
        self.assertNotEqual(r.header("Idempotent-Replayed"), "true")
        self.assertEqual(r.body["order_id"], b["id"])
        self.assertNotEqual(r.body["id"], first.body["id"])
        self.assertEqual(s.wait_payment_final(r.body["id"])["status"], "succeeded")
        # The first payment is untouched by the purge.
        p1 = s.get_payment(first.body["id"]).body
        self.assertEqual(p1["status"], "succeeded")
        self.assertEqual(p1["order_id"], a["id"])
        self.assertEqual(s.get_order(b["id"]).body["status"], "paid")


class KeyInUseTest(PaydTestCase):
    server_env = {"PAYD_CHANNEL_SANDBOX_TIMEOUT_MS": "3000"}

    def test_concurrent_same_key(self):
        """50 concurrent requests with the same key and body: every answer is
        202 (one original, the others replays with the identical body) or 409
        idempotency_key_in_use / payment_in_progress; one payment."""
        s = self.server
        order = s.create_order(amount=4321)
        key = unique("inuse")
        results = fire(50, lambda i: s.pay(order["id"], "slow", idem=key))
        for r in results:
            self.assertNotIsInstance(r, Exception, r)
        accepted = [r for r in results if r.status == 202]
        self.assertGreaterEqual(len(accepted), 1, results)
        self.assertEqual(len({r.raw for r in accepted}), 1, "202 bodies differ")
        originals = [r for r in accepted if r.header("Idempotent-Replayed") != "true"]
        self.assertEqual(len(originals), 1, "answers without Idempotent-Replayed: %d"
                         % len(originals))
        for r in results:
            if r.status != 202:
                self.assertEqual(r.status, 409, r)
                self.assertEqual(r.error["type"], "conflict", r)
                self.assertIn(r.error["code"], ("idempotency_key_in_use", "payment_in_progress"),
                              r)
        pid = accepted[0].body["id"]
        self.assertEqual(s.wait_payment_final(pid)["status"], "succeeded")
        data = s.list_payments(order["id"]).body["data"]
        self.assertEqual([p["id"] for p in data], [pid])
        serial = data[0]["serial_no"]
        self.assertEqual(len([c for c in s.charges() if c["serial_no"] == serial]), 1)
        # Afterwards the key replays the first answer.
        again = s.pay(order["id"], "slow", idem=key)
        self.assertEqual(again.status, 202)
        self.assertEqual(again.raw, accepted[0].raw)

    def test_keys_are_per_merchant(self):
        s = self.server
        other = s.add_merchant(unique("idem").replace("-", "_"))
        key = unique("shared-key")
        o1 = s.create_order(amount=10)
        o2 = s.create_order(amount=20, key=other)
        r1 = s.pay(o1["id"], "ok", idem=key)
        self.assertStatus(r1, 202)
        r2 = s.pay(o2["id"], "ok", idem=key, key=other)
        self.assertStatus(r2, 202)
        self.assertNotEqual(r2.header("Idempotent-Replayed"), "true")
        self.assertNotEqual(r1.body["id"], r2.body["id"])
        self.assertEqual(s.wait_payment_final(r1.body["id"])["status"], "succeeded")
        self.assertEqual(s.wait_payment_final(r2.body["id"], key=other)["status"], "succeeded")
        # Each merchant's replay is its own answer.
        self.assertEqual(s.pay(o1["id"], "ok", idem=key).raw, r1.raw)
        self.assertEqual(s.pay(o2["id"], "ok", idem=key, key=other).raw, r2.raw)


if __name__ == "__main__":
    unittest.main()
