"""
Orders: create, the merchant order number as a natural idempotency key, GET.
"""

import threading
import unittest

from harness import PaydTestCase, unique


ORDER_FIELDS = {"id", "merchant_order_no", "amount", "currency", "description", "status",
                "created_at"}


class OrdersTest(PaydTestCase):

    def test_create_201_fields_and_formats(self):
        no = unique("A")
        r = self.server.request("POST", "/v1/orders",
                                {"merchant_order_no": no, "amount": 1999, "currency": "CNY",
                                 "description": "2 items"})
        o = self.assertStatus(r, 201)
        self.assertTrue((r.header("Content-Type") or "").startswith("application/json"))
        self.assertEqual(set(o), ORDER_FIELDS, o)
        self.assertIsInstance(o["id"], str)
        self.assertTrue(o["id"].startswith("ord_") and len(o["id"]) > 4, o["id"])
        self.assertEqual(o["merchant_order_no"], no)
        self.assertEqual(o["amount"], 1999)
        self.assertEqual(o["currency"], "CNY")
        self.assertEqual(o["description"], "2 items")
        self.assertEqual(o["status"], "pending_payment")
        self.assertRFC3339(o["created_at"])

    def test_description_absent_is_null(self):
        o = self.server.create_order(description=None)
        self.assertIn("description", o)
        self.assertIsNone(o["description"])
        self.assertIsNone(self.server.get_order(o["id"]).body["description"])

    def test_get_by_id(self):
        o = self.server.create_order(amount=4242, currency="USD", description="get me")
        r = self.server.get_order(o["id"])
        self.assertEqual(self.assertStatus(r, 200), o)
        self.assertTrue((r.header("Content-Type") or "").startswith("application/json"))

    def test_ids_are_distinct(self):
        ids = {self.server.create_order()["id"] for _ in range(20)}
        self.assertEqual(len(ids), 20)

    def test_same_number_same_content_200_same_order(self):
        no = unique("same")
        body = {"merchant_order_no": no, "amount": 700, "currency": "EUR", "description": "d"}
        r1 = self.server.request("POST", "/v1/orders", body)
        o1 = self.assertStatus(r1, 201)
        before = self.server.db_scalar("SELECT count(*) FROM orders")
        # Same content with the keys in another order and other white space.
        raw = ('{ "description" : "d", "currency":"EUR",\n "amount": 700,'
               ' "merchant_order_no": "%s" }' % no).encode()
        r2 = self.server.request("POST", "/v1/orders", raw)
        self.assertEqual(self.assertStatus(r2, 200), o1)
        self.assertEqual(self.server.db_scalar("SELECT count(*) FROM orders"), before)

    def test_same_number_without_description_twice(self):
        no = unique("nodesc")
        o1 = self.server.create_order(merchant_order_no=no, amount=5, currency="JPY")
        r = self.server.request("POST", "/v1/orders",
                                {"merchant_order_no": no, "amount": 5, "currency": "JPY"})
        self.assertEqual(self.assertStatus(r, 200), o1)

    def test_same_number_different_content_409(self):
        no = unique("diff")
        o1 = self.server.create_order(merchant_order_no=no, amount=100)
        before = self.server.db_scalar("SELECT count(*) FROM orders")
        r = self.server.request("POST", "/v1/orders",
                                {"merchant_order_no": no, "amount": 200, "currency": "CNY"})
        self.assertError(r, 409, "conflict", "order_number_reused")
        self.assertEqual(self.server.db_scalar("SELECT count(*) FROM orders"), before)
        self.assertEqual(self.server.get_order(o1["id"]).body, o1)

    def test_same_number_after_paid_still_returns_order(self):
        no = unique("paid")
        o = self.server.create_order(merchant_order_no=no, amount=321)
        p = self.server.pay(o["id"], "ok")
        self.assertStatus(p, 202)
        self.assertEqual(self.server.wait_payment_final(p.body["id"])["status"], "succeeded")
        r = self.server.request("POST", "/v1/orders",
                                {"merchant_order_no": no, "amount": 321, "currency": "CNY"})
        got = self.assertStatus(r, 200)
        self.assertEqual(got["id"], o["id"])
        self.assertEqual(got["status"], "paid")

    def test_concurrent_create_same_number(self):
        """20 clients create the same order number at once: one 201, the rest
        200 with the same order; one row."""
        no = unique("race")
        body = {"merchant_order_no": no, "amount": 999, "currency": "CNY"}
        barrier = threading.Barrier(20)
        results = [None] * 20
        before = self.server.db_scalar("SELECT count(*) FROM orders")

        def worker(i):
            barrier.wait()
            try:
                results[i] = self.server.request("POST", "/v1/orders", body)
            except Exception as e:  # recorded, asserted below
                results[i] = e

        threads = [threading.Thread(target=worker, args=(i,)) for i in range(20)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        for r in results:
            self.assertNotIsInstance(r, Exception, r)
        statuses = sorted(r.status for r in results)
        self.assertEqual(statuses.count(201), 1, statuses)
        self.assertEqual(statuses.count(200), 19, statuses)
        self.assertEqual(len({r.body["id"] for r in results}), 1)
        self.assertEqual(self.server.db_scalar("SELECT count(*) FROM orders"), before + 1)

    def test_order_persisted_in_store(self):
        o = self.server.create_order(amount=77, currency="USD")
        rows = self.server.db("SELECT id FROM orders WHERE id = ?", (o["id"],))
        self.assertEqual(rows, [(o["id"],)])


if __name__ == "__main__":
    unittest.main()
