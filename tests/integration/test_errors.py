"""
Every row of the error tables (docs/API.md "Errors" and "Authentication"):
status, type, code, param, and that nothing was written.
"""

import json
import unittest

from harness import PaydTestCase, Server, unique, http_request

MAX_AMOUNT = 10 ** 15


def order_body(**over):
    b = {"merchant_order_no": unique("E"), "amount": 1999, "currency": "CNY"}
    b.update(over)
    return b


class ErrorTablesTest(PaydTestCase):
    """Shares one server; no payment is ever left in flight, so the table
    row counts of payd.db are stable between requests."""
    # `slow` must stay processing for its 2 s (the sandbox answers a slow
    # call as a timeout when timeout_ms is shorter).
    server_env = {"PAYD_CHANNEL_SANDBOX_TIMEOUT_MS": "3000"}

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.order = cls.server.create_order(merchant_order_no=unique("base"), amount=500)

    # ---- helpers --------------------------------------------------------------

    def snapshot(self):
        return self.server.table_counts()

    def assertNothingWritten(self, before):
        self.assertEqual(self.server.table_counts(), before, "a refused request wrote rows")

    def post_order_error(self, body, status, type_, code, param=None, **kw):
        before = self.snapshot()
        r = self.server.request("POST", "/v1/orders", body, **kw)
        err = self.assertError(r, status, type_, code)
        if param is not None:
            self.assertEqual(err.get("param"), param, "param of %r" % (r,))
        self.assertNothingWritten(before)
        return r

    def post_payment_error(self, body, status, type_, code, param=None, **kw):
        before = self.snapshot()
        r = self.server.request("POST", "/v1/payments", body, **kw)
        err = self.assertError(r, status, type_, code)
        if param is not None:
            self.assertEqual(err.get("param"), param, "param of %r" % (r,))
        self.assertNothingWritten(before)
        return r

    def fresh_order(self):
        return self.server.create_order()

    # ---- 400: body ------------------------------------------------------------

    def test_malformed_json(self):
        for raw in ['{"merchant_order_no":"A-1","amount":', '{amount: 1}', "not json",
                    '{"amount":1999,}', '{"a":"unterminated}', ""]:
            with self.subTest(body=raw):
                self.post_order_error(raw.encode(), 400, "invalid_request_error", "json_invalid")

    def test_body_not_utf8(self):
        raw = b'{"merchant_order_no":"A-\xff\xfe","amount":1999,"currency":"CNY"}'
        self.post_order_error(raw, 400, "invalid_request_error", "json_invalid")

    def test_error_messages_quoting_a_cut_character(self):
        # Found by tests/fuzz: messages that quote what the client sent (the
        # JSON parser's account of where it broke, an unknown field's name cut
        # to fit) once held half a UTF-8 character, and the answer could not
        # be made: payd stopped on an assertion.
        before = self.snapshot()
        raws = [b'{"merchant_order_no":"a\\u000\xc8\x9d","amount":5}']
        # an unknown field of two-byte characters, named in a message cut to
        # fit: one of these lengths cuts it in the middle of a character
        raws += [('{"%s":1}' % ("\u00e9" * n)).encode() for n in range(40, 70)]
        for raw in raws:
            with self.subTest(body=raw):
                r = self.server.request("POST", "/v1/orders", raw)
                self.assertEqual(r.status, 400, r)
                self.assertTrue(r.error and r.error.get("message"), r)
        self.assertTrue(self.server.running())
        self.assertEqual(self.server.request("GET", "/healthz", key=None).status, 200)
        self.assertNothingWritten(before)

    def test_currency_with_nul_refused(self):
        self.post_order_error(b'{"merchant_order_no":"A-nul","amount":1,"currency":"CNY\\u0000"}',
                              400, "invalid_request_error", "currency_invalid", "currency")

    def test_body_not_an_object(self):
        for raw in ["[]", "[1,2]", '"order"', "1999", "null", "true"]:
            with self.subTest(body=raw):
                self.post_order_error(raw.encode(), 400, "invalid_request_error",
                                      "body_not_object")

    def test_payment_body_errors(self):
        self.post_payment_error(b'{"order_id":', 400, "invalid_request_error", "json_invalid")
        self.post_payment_error(b"[]", 400, "invalid_request_error", "body_not_object")

    def test_deep_nesting_does_not_crash(self):
        # A C parser that recurses without a limit dies here.
        depth = 30000
        before = self.snapshot()
        r = self.server.request("POST", "/v1/orders", ("[" * depth + "]" * depth).encode())
        self.assertEqual(r.status, 400, r)
        self.assertIn(r.error and r.error.get("code"), ("json_invalid", "body_not_object"))
        depth = 10000       # 6 bytes a level: stays under 64 KiB
        nested = '{"merchant_order_no":' + '{"a":' * depth + "1" + "}" * depth + \
                 ',"amount":1,"currency":"CNY"}'
        r = self.server.request("POST", "/v1/orders", nested.encode())
        self.assertEqual(r.status, 400, r)
        self.assertIn(r.error and r.error.get("code"), ("json_invalid", "parameter_invalid"))
        self.assertEqual(self.server.request("GET", "/healthz", key=None).status, 200)
        self.assertTrue(self.server.running())
        self.assertNothingWritten(before)

    # ---- 400: fields of an order ----------------------------------------------

    def test_missing_fields(self):
        for field in ("merchant_order_no", "amount", "currency"):
            with self.subTest(field=field):
                body = order_body()
                del body[field]
                self.post_order_error(body, 400, "invalid_request_error",
                                      "parameter_missing", field)
        self.post_order_error({}, 400, "invalid_request_error", "parameter_missing")

    def test_unknown_field(self):
        self.post_order_error(order_body(colour="red"), 400, "invalid_request_error",
                              "parameter_unknown", "colour")
        self.post_order_error(order_body(status="paid"), 400, "invalid_request_error",
                              "parameter_unknown", "status")

    def test_bad_amounts(self):
        bad = {
            "zero": "0",
            "negative": "-1",
            "over_max": str(MAX_AMOUNT + 1),
            "fraction": "1.5",
            "string": '"100"',
            "bool": "true",
            "int64_overflow": "9223372036854775808",
            "huge": "1" + "0" * 40,
            "small_fraction": "0.5",
        }
        for name, lit in bad.items():
            with self.subTest(amount=name):
                raw = ('{"merchant_order_no":"%s","amount":%s,"currency":"CNY"}'
                       % (unique("amt"), lit)).encode()
                self.post_order_error(raw, 400, "invalid_request_error", "amount_invalid",
                                      "amount")

    def test_amount_bounds_accepted(self):
        for amount in (1, MAX_AMOUNT):
            with self.subTest(amount=amount):
                r = self.server.request("POST", "/v1/orders", order_body(amount=amount))
                body = self.assertStatus(r, 201)
                self.assertEqual(body["amount"], amount)
                self.assertIsInstance(body["amount"], int)

    def test_bad_currencies(self):
        for cur in ("ABC", "XAU", "XTS", "XXX", "XAG", "cny", "Cny", "CN", "CNYY", "", "US D"):
            with self.subTest(currency=cur):
                self.post_order_error(order_body(currency=cur), 400, "invalid_request_error",
                                      "currency_invalid", "currency")

    def test_known_currencies_accepted(self):
        for cur in ("CNY", "USD", "EUR", "JPY", "GBP"):
            with self.subTest(currency=cur):
                r = self.server.request("POST", "/v1/orders", order_body(currency=cur))
                self.assertEqual(self.assertStatus(r, 201)["currency"], cur)

    def test_bad_merchant_order_no(self):
        cases = {
            "empty": "",
            "65_chars": "A" * 65,
            "control": "A-\x01",
            "tab": "A\tB",
            "newline": "A\nB",
            "del": "A\x7f",
            "nul": "A\x00B",
            "non_ascii": "A-\u00e9",
        }
        for name, value in cases.items():
            with self.subTest(case=name):
                self.post_order_error(order_body(merchant_order_no=value), 400,
                                      "invalid_request_error", "parameter_invalid",
                                      "merchant_order_no")
        self.post_order_error(order_body(merchant_order_no=1001), 400,
                              "invalid_request_error", "parameter_invalid", "merchant_order_no")

    def test_merchant_order_no_bounds_accepted(self):
        for value in ("Z", unique("B")[:20].ljust(64, "x"), " ~!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}"
                      + unique("p")):
            with self.subTest(value=value):
                r = self.server.request("POST", "/v1/orders", order_body(merchant_order_no=value))
                self.assertEqual(self.assertStatus(r, 201)["merchant_order_no"], value)

    def test_bad_description(self):
        self.post_order_error(order_body(description="d" * 1025), 400, "invalid_request_error",
                              "parameter_invalid", "description")
        self.post_order_error(order_body(description=12), 400, "invalid_request_error",
                              "parameter_invalid", "description")
        r = self.server.request("POST", "/v1/orders", order_body(description="d" * 1024))
        self.assertEqual(self.assertStatus(r, 201)["description"], "d" * 1024)

    # ---- 400: fields of a payment ---------------------------------------------

    def test_payment_missing_and_unknown_fields(self):
        oid = self.order["id"]
        full = {"order_id": oid, "channel": "sandbox", "method": "ok"}
        for field in full:
            with self.subTest(missing=field):
                body = dict(full)
                del body[field]
                self.post_payment_error(body, 400, "invalid_request_error",
                                        "parameter_missing", field)
        self.post_payment_error(dict(full, amount=1), 400, "invalid_request_error",
                                "parameter_unknown", "amount")
        self.post_payment_error(dict(full, order_id=123), 400, "invalid_request_error",
                                "parameter_invalid", "order_id")
        self.assertEqual(self.server.get_order(oid).body["status"], "pending_payment")

    def test_unknown_channel(self):
        self.post_payment_error({"order_id": self.order["id"], "channel": "nochannel",
                                 "method": "ok"},
                                400, "invalid_request_error", "channel_invalid", "channel")

    def test_unknown_method(self):
        for method in ("bogus", "OK", "ok "):
            with self.subTest(method=method):
                self.post_payment_error({"order_id": self.order["id"], "channel": "sandbox",
                                         "method": method},
                                        400, "invalid_request_error", "method_invalid", "method")
        # An empty method is a bad form (parameter_invalid) or an unknown
        # method (method_invalid): the documents allow either; param is `method`.
        before = self.snapshot()
        r = self.server.pay(self.order["id"], "")
        self.assertEqual(r.status, 400, r)
        self.assertIn(r.error["code"], ("parameter_invalid", "method_invalid"), r)
        self.assertEqual(r.error.get("param"), "method", r)
        self.assertNothingWritten(before)

    def test_bad_idempotency_key(self):
        body = {"order_id": self.order["id"], "channel": "sandbox", "method": "ok"}
        for key in ("k" * 256, ""):
            with self.subTest(length=len(key)):
                self.post_payment_error(body, 400, "invalid_request_error",
                                        "idempotency_key_invalid", "Idempotency-Key", idem=key)
        r = self.server.list_payments(self.order["id"])
        self.assertEqual(self.assertStatus(r, 200), {"data": []})

    def test_idempotency_key_255_accepted(self):
        order = self.fresh_order()
        key = ("k" * 255)
        r = self.server.pay(order["id"], "ok", idem=key)
        self.assertStatus(r, 202)
        self.server.wait_payment_final(r.body["id"])
        r2 = self.server.pay(order["id"], "ok", idem=key)
        self.assertStatus(r2, 202)
        self.assertEqual(r2.header("Idempotent-Replayed"), "true")
        self.assertEqual(r2.raw, r.raw)

    def test_refused_request_does_not_store_key(self):
        """Only 202 answers are stored: a key whose first use was refused
        (400) can be used again for a valid request."""
        order = self.fresh_order()
        key = unique("reuse-after-400")
        bad = self.server.pay(order["id"], "bogus", idem=key)
        self.assertError(bad, 400, "invalid_request_error", "method_invalid", "method")
        good = self.server.pay(order["id"], "ok", idem=key)
        self.assertStatus(good, 202)
        self.assertNotEqual(good.header("Idempotent-Replayed"), "true")
        self.assertEqual(self.server.wait_payment_final(good.body["id"])["status"], "succeeded")

    def test_payments_list_needs_order_id(self):
        r = self.server.request("GET", "/v1/payments")
        self.assertError(r, 400, "invalid_request_error", "parameter_missing", "order_id")

    # ---- 401 -------------------------------------------------------------------

    def test_401_missing_key(self):
        before = self.snapshot()
        for method, path, body in [("POST", "/v1/orders", order_body()),
                                   ("GET", "/v1/orders/" + self.order["id"], None),
                                   ("POST", "/v1/payments", {"order_id": self.order["id"],
                                                             "channel": "sandbox",
                                                             "method": "ok"}),
                                   ("GET", "/v1/payments?order_id=" + self.order["id"], None),
                                   ("GET", "/v1/channels", None),
                                   ("GET", "/v1/balance", None)]:
            with self.subTest(path=path, method=method):
                r = self.server.request(method, path, body, key=None)
                self.assertError(r, 401, "authentication_error", "api_key_missing")
        self.assertNothingWritten(before)

    def test_401_not_bearer(self):
        for value in ("Basic " + self.server.key, self.server.key, "Bearer", "Bearer "):
            with self.subTest(authorization=value):
                r = self.server.request("GET", "/v1/orders/" + self.order["id"], key=None,
                                        headers={"Authorization": value})
                self.assertEqual(r.status, 401, r)
                self.assertEqual(r.error["type"], "authentication_error")
                self.assertIn(r.error["code"], ("api_key_missing", "api_key_invalid"))
        r = self.server.request("GET", "/v1/orders/" + self.order["id"], key=None,
                                headers={"Authorization": "Basic " + self.server.key})
        self.assertError(r, 401, "authentication_error", "api_key_missing")

    def test_401_wrong_key(self):
        before = self.snapshot()
        for key in ("sk_" + "0" * 48, self.server.key + "x", self.server.key[:-1],
                    "sk_" + "f" * 48):
            with self.subTest(key=key):
                r = self.server.request("POST", "/v1/orders", order_body(), key=key)
                self.assertError(r, 401, "authentication_error", "api_key_invalid")
        self.assertNothingWritten(before)

    def test_401_comes_before_validation(self):
        before = self.snapshot()
        r = self.server.request("POST", "/v1/orders", b"{not json", key="sk_" + "1" * 48)
        self.assertError(r, 401, "authentication_error", "api_key_invalid")
        r = self.server.request("POST", "/v1/orders", b"{not json", key=None)
        self.assertError(r, 401, "authentication_error", "api_key_missing")
        self.assertNothingWritten(before)

    # ---- 404 / 405 --------------------------------------------------------------

    def test_404_unknown_ids(self):
        r = self.server.get_order("ord_doesnotexist0000000000")
        self.assertError(r, 404, "not_found", "resource_missing")
        r = self.server.get_payment("pay_doesnotexist0000000000")
        self.assertError(r, 404, "not_found", "resource_missing")
        r = self.server.list_payments("ord_doesnotexist0000000000")
        self.assertError(r, 404, "not_found", "resource_missing")
        # An id of the wrong type is just as unknown.
        r = self.server.get_order(self.order["id"].replace("ord_", "pay_", 1))
        self.assertError(r, 404, "not_found", "resource_missing")
        before = self.snapshot()
        r = self.server.pay("ord_doesnotexist0000000000")
        self.assertError(r, 404, "not_found", "resource_missing", "order_id")
        self.assertNothingWritten(before)

    def test_404_unknown_route(self):
        for method, path, key in [("GET", "/v1/nothing", True), ("POST", "/v1/nothing", True),
                                  ("GET", "/nothing", False), ("GET", "/v2/orders", True)]:
            with self.subTest(path=path):
                r = self.server.request(method, path, {} if method == "POST" else None,
                                        **({} if key else {"key": None}))
                self.assertError(r, 404, "not_found", "route_not_found")

    def test_405(self):
        oid = self.order["id"]
        before = self.snapshot()
        for method, path in [("DELETE", "/v1/orders/" + oid), ("PUT", "/v1/orders/" + oid),
                             ("PATCH", "/v1/orders/" + oid), ("DELETE", "/v1/payments"),
                             ("PUT", "/v1/payments"), ("POST", "/v1/channels"),
                             ("POST", "/v1/balance")]:
            with self.subTest(method=method, path=path):
                r = self.server.request(method, path, {} if method != "DELETE" else None)
                self.assertError(r, 405, "invalid_request_error", "method_not_allowed")
        for method, path in [("POST", "/healthz"), ("DELETE", "/metrics"), ("POST", "/readyz")]:
            with self.subTest(method=method, path=path):
                r = self.server.request(method, path, {}, key=None)
                self.assertError(r, 405, "invalid_request_error", "method_not_allowed")
        self.assertNothingWritten(before)
        self.assertEqual(self.server.get_order(oid).body["status"], "pending_payment")

    # ---- 409 ------------------------------------------------------------------------

    def test_409_order_number_reused(self):
        no = unique("reuse")
        first = self.server.create_order(merchant_order_no=no, amount=100, description="x")
        for change in ({"amount": 101}, {"currency": "USD"}, {"description": "y"},
                       {"description": None}):
            with self.subTest(change=change):
                body = {"merchant_order_no": no, "amount": 100, "currency": "CNY",
                        "description": "x"}
                body.update(change)
                if body["description"] is None:
                    del body["description"]
                self.post_order_error(body, 409, "conflict", "order_number_reused")
        self.assertEqual(self.assertStatus(self.server.get_order(first["id"]), 200), first)

    def test_409_order_already_paid(self):
        order = self.fresh_order()
        r = self.server.pay(order["id"], "ok")
        self.assertStatus(r, 202)
        self.assertEqual(self.server.wait_payment_final(r.body["id"])["status"], "succeeded")
        self.post_payment_error({"order_id": order["id"], "channel": "sandbox", "method": "ok"},
                                409, "conflict", "order_already_paid")
        self.post_payment_error({"order_id": order["id"], "channel": "sandbox",
                                 "method": "declined"},
                                409, "conflict", "order_already_paid",
                                idem=unique("paid-again"))
        self.assertEqual(len(self.server.list_payments(order["id"]).body["data"]), 1)

    def test_409_payment_in_progress(self):
        order = self.fresh_order()
        r = self.server.pay(order["id"], "slow")
        self.assertStatus(r, 202)
        # `slow` takes about 2 s, so the payment is still processing now.
        r2 = self.server.request("POST", "/v1/payments",
                                 {"order_id": order["id"], "channel": "sandbox", "method": "ok"},
                                 idem=unique("second"))
        self.assertError(r2, 409, "conflict", "payment_in_progress")
        self.assertEqual(self.server.wait_payment_final(r.body["id"])["status"], "succeeded")
        data = self.server.list_payments(order["id"]).body["data"]
        self.assertEqual([p["id"] for p in data], [r.body["id"]])

    # ---- 413 ------------------------------------------------------------------------

    def padded_order(self, size):
        """A valid order body of exactly `size` bytes (white space padding)."""
        body = json.dumps(order_body()).encode()
        pad = size - len(body)
        self.assertGreaterEqual(pad, 0)
        return body[:-1] + b" " * pad + b"}"

    def test_413_over_64KiB(self):
        before = self.snapshot()
        r = self.server.request("POST", "/v1/orders", self.padded_order(65537))
        self.assertError(r, 413, "invalid_request_error", "body_too_large")
        r = self.server.request("POST", "/v1/payments",
                                b'{"order_id":"' + b"x" * 70000 + b'"}')
        self.assertError(r, 413, "invalid_request_error", "body_too_large")
        r = self.server.request("POST", "/v1/orders", b"{" + b" " * (1 << 20) + b"}")
        self.assertError(r, 413, "invalid_request_error", "body_too_large")
        self.assertNothingWritten(before)
        self.assertEqual(self.server.request("GET", "/healthz", key=None).status, 200)

    def test_exactly_64KiB_accepted(self):
        r = self.server.request("POST", "/v1/orders", self.padded_order(65536))
        self.assertStatus(r, 201)

    # ---- 422 ------------------------------------------------------------------------

    def test_422_same_key_different_request(self):
        o1, o2 = self.fresh_order(), self.fresh_order()
        key = unique("k422")
        first = self.server.pay(o1["id"], "ok", idem=key)
        self.assertStatus(first, 202)
        self.server.wait_payment_final(first.body["id"])
        for body in ({"order_id": o1["id"], "channel": "sandbox", "method": "declined"},
                     {"order_id": o2["id"], "channel": "sandbox", "method": "ok"}):
            with self.subTest(body=body):
                self.post_payment_error(body, 422, "idempotency_error", "idempotency_key_reused",
                                        idem=key)
        self.assertEqual(self.server.list_payments(o2["id"]).body, {"data": []})
        self.assertEqual(self.server.get_order(o2["id"]).body["status"], "pending_payment")


class SmallBodyLimitTest(PaydTestCase):
    server_config = "[server]\nmax_body_bytes = 1024\n"

    def padded(self, size):
        body = json.dumps(order_body()).encode()
        return body[:-1] + b" " * (size - len(body)) + b"}"

    def test_413_over_configured_limit(self):
        before = self.server.table_counts()
        r = self.server.request("POST", "/v1/orders", self.padded(1025))
        self.assertError(r, 413, "invalid_request_error", "body_too_large")
        r = self.server.request("POST", "/v1/orders", self.padded(4000))
        self.assertError(r, 413, "invalid_request_error", "body_too_large")
        self.assertEqual(self.server.table_counts(), before)
        r = self.server.request("POST", "/v1/orders", self.padded(1024))
        self.assertStatus(r, 201)


if __name__ == "__main__":
    unittest.main()
