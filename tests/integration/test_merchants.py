"""
The merchant command line (add, rotate-key, list), keys, and the isolation
of merchants from each other.
"""

import os
import re
import stat
import unittest

from harness import (KEY_RE, START_DEADLINE_S, PaydTestCase, Server, last_line, run_cli,
                     unique)


def mname(prefix):
    return unique(prefix).replace("-", "_")


class MerchantCliTest(PaydTestCase):

    def cli(self, *args):
        return run_cli(list(args) + ["--data-dir", self.server.data_dir])

    def test_add_prints_key_that_works_at_once(self):
        name = mname("shop")
        cp = self.cli("merchant", "add", name)
        self.assertEqual(cp.returncode, 0, cp.stderr)
        key = last_line(cp.stdout)
        self.assertRegex(key, KEY_RE)
        self.assertEqual(cp.stdout.rstrip("\n").split("\n")[-1], key, "key alone on the last line")
        r = self.server.request("GET", "/v1/balance", key=key)
        self.assertEqual(self.assertStatus(r, 200), {"data": []})
        o = self.server.create_order(key=key)
        self.assertEqual(self.assertStatus(self.server.get_order(o["id"], key=key), 200), o)

    def test_keys_stored_only_as_hashes(self):
        name = mname("hash")
        key = self.server.add_merchant(name)
        self.server.request("GET", "/v1/balance", key=key)
        blob = self.server.store_dump()
        self.assertIn(name.encode(), blob)
        self.assertNotIn(key.encode(), blob)
        self.assertNotIn(self.server.key.encode(), blob)

    def test_merchants_isolated(self):
        a = self.server.add_merchant(mname("iso_a"))
        b = self.server.add_merchant(mname("iso_b"))
        no = unique("same-number")
        oa = self.server.create_order(merchant_order_no=no, amount=100, key=a)
        # The same merchant order number is another merchant's own business.
        ob = self.server.create_order(merchant_order_no=no, amount=999, key=b)
        self.assertNotEqual(oa["id"], ob["id"])
        pa = self.server.pay(oa["id"], "ok", key=a)
        self.assertStatus(pa, 202)
        self.server.wait_payment_final(pa.body["id"], key=a)

        unknown_order = "ord_" + "0" * (len(oa["id"]) - 4)
        unknown_pay = "pay_" + "0" * (len(pa.body["id"]) - 4)

        def same_404(theirs, unknown, make):
            r1, r2 = make(theirs), make(unknown)
            self.assertError(r1, 404, "not_found", "resource_missing")
            self.assertError(r2, 404, "not_found", "resource_missing")
            e1, e2 = dict(r1.error), dict(r2.error)
            e1["message"] = e1["message"].replace(theirs, "ID")
            e2["message"] = e2["message"].replace(unknown, "ID")
            self.assertEqual(e1, e2, "another merchant's id answers differently from an "
                                     "unknown one")
            self.assertEqual(r1.raw.replace(theirs.encode(), b"ID"),
                             r2.raw.replace(unknown.encode(), b"ID"))

        before = self.server.table_counts()
        same_404(oa["id"], unknown_order, lambda i: self.server.get_order(i, key=b))
        same_404(oa["id"], unknown_order, lambda i: self.server.list_payments(i, key=b))
        same_404(pa.body["id"], unknown_pay, lambda i: self.server.get_payment(i, key=b))
        same_404(oa["id"], unknown_order, lambda i: self.server.pay(i, "ok", key=b))
        r = self.server.pay(oa["id"], "ok", key=b)
        self.assertEqual(r.error.get("param"), "order_id")
        # The demo merchant does not see them either.
        self.assertEqual(self.server.get_order(oa["id"]).status, 404)
        self.assertEqual(self.server.table_counts(), before)
        # Their balances are their own.
        self.assertEqual(self.server.request("GET", "/v1/balance", key=b).body, {"data": []})
        self.assertEqual(self.server.request("GET", "/v1/balance", key=a).body,
                         {"data": [{"currency": "CNY", "amount": 100}]})
        # b's order is still payable by b.
        pb = self.server.pay(ob["id"], "ok", key=b)
        self.assertStatus(pb, 202)
        self.assertEqual(self.server.wait_payment_final(pb.body["id"], key=b)["status"],
                         "succeeded")

    def test_add_while_server_is_busy(self):
        """merchant add works while the server writes (payments in flight)."""
        import threading
        stop = threading.Event()
        errors = []

        def load():
            while not stop.is_set():
                try:
                    o = self.server.create_order()
                    r = self.server.pay(o["id"], "ok")
                    if r.status != 202:
                        errors.append(r)
                except Exception as e:
                    errors.append(e)

        threads = [threading.Thread(target=load) for _ in range(4)]
        for t in threads:
            t.start()
        try:
            keys = []
            for i in range(8):
                cp = self.cli("merchant", "add", mname("busy%d" % i))
                self.assertEqual(cp.returncode, 0, cp.stderr)
                keys.append(last_line(cp.stdout))
        finally:
            stop.set()
            for t in threads:
                t.join(120)
        self.assertEqual(errors, [])
        for k in keys:
            self.assertRegex(k, KEY_RE)
            self.assertEqual(self.server.request("GET", "/v1/balance", key=k).status, 200)

    def test_rotate_key(self):
        name = mname("rot")
        old = self.server.add_merchant(name)
        o = self.server.create_order(key=old)
        cp = self.cli("merchant", "rotate-key", name)
        self.assertEqual(cp.returncode, 0, cp.stderr)
        new = last_line(cp.stdout)
        self.assertRegex(new, KEY_RE)
        self.assertNotEqual(new, old)
        r = self.server.get_order(o["id"], key=old)
        self.assertError(r, 401, "authentication_error", "api_key_invalid")
        r = self.server.request("POST", "/v1/orders", {"merchant_order_no": unique("x"),
                                                       "amount": 1, "currency": "CNY"}, key=old)
        self.assertError(r, 401, "authentication_error", "api_key_invalid")
        self.assertEqual(self.assertStatus(self.server.get_order(o["id"], key=new), 200), o)
        # Rotating again retires the second key too.
        newer = last_line(self.cli("merchant", "rotate-key", name).stdout)
        self.assertRegex(newer, KEY_RE)
        self.assertEqual(self.server.get_order(o["id"], key=new).status, 401)
        self.assertEqual(self.server.get_order(o["id"], key=newer).status, 200)
        # Other merchants are untouched.
        self.assertEqual(self.server.request("GET", "/v1/balance").status, 200)

    def test_rotate_unknown_fails(self):
        cp = self.cli("merchant", "rotate-key", mname("nobody"))
        self.assertEqual(cp.returncode, 1, cp.stdout)
        self.assertTrue(cp.stderr.strip())
        self.assertFalse(KEY_RE.search(cp.stdout), cp.stdout)

    def test_list(self):
        names = [mname("list_a"), mname("list_b")]
        for n in names:
            self.server.add_merchant(n)
        cp = self.cli("merchant", "list")
        self.assertEqual(cp.returncode, 0, cp.stderr)
        lines = [l for l in cp.stdout.splitlines() if l.strip()]
        for n in names + ["demo"]:
            match = [l for l in lines
                     if re.search(r"(^|[\s,;|])%s([\s,;|]|$)" % re.escape(n), l)]
            self.assertEqual(len(match), 1, "%s in %r" % (n, cp.stdout))
            self.assertRegex(match[0], r"mch_\S+")
            self.assertRegex(match[0], r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}")
        self.assertNotIn("sk_", cp.stdout)

    def test_duplicate_add_fails(self):
        name = mname("dup")
        key = self.server.add_merchant(name)
        cp = self.cli("merchant", "add", name)
        self.assertEqual(cp.returncode, 1)
        self.assertTrue(cp.stderr.strip())
        self.assertFalse(KEY_RE.search(cp.stdout), cp.stdout)
        # The first key still works.
        self.assertEqual(self.server.request("GET", "/v1/balance", key=key).status, 200)
        cp = self.cli("merchant", "add", "demo")
        self.assertEqual(cp.returncode, 1)
        self.assertEqual(self.server.request("GET", "/v1/balance").status, 200)

    def test_bad_names_refused(self):
        for name in ("", "has space", "a/b", "x" * 65, "é"):
            with self.subTest(name=name):
                cp = self.cli("merchant", "add", name)
                self.assertNotEqual(cp.returncode, 0, cp.stdout)
                self.assertFalse(KEY_RE.search(cp.stdout), cp.stdout)
        cp = self.cli("merchant", "list")
        self.assertNotIn("has space", cp.stdout)
        ok = "A.b_c-" + "9" * 58      # 64 characters of the allowed set
        cp = self.cli("merchant", "add", ok)
        self.assertEqual(cp.returncode, 0, cp.stderr)

    def test_demo_key_file(self):
        path = os.path.join(self.server.data_dir, "demo.key")
        mode = stat.S_IMODE(os.stat(path).st_mode)
        self.assertEqual(mode, 0o600, oct(mode))
        with open(path) as f:
            text = f.read()
        self.assertRegex(text, r"^sk_[0-9a-f]{48}\n?$")
        self.assertEqual(self.server.request("GET", "/v1/balance", key=text.strip()).status, 200)

    def test_merchant_survives_restart(self):
        name = mname("persist")
        key = self.server.add_merchant(name)
        o = self.server.create_order(key=key)
        self.assertEqual(self.server.stop(), 0)
        self.server.start()
        self.assertEqual(self.assertStatus(self.server.get_order(o["id"], key=key), 200), o)


class DemoKeyEnvTest(PaydTestCase):
    shared_server = False

    def test_payd_demo_key_sets_the_key(self):
        key = "test-demo-key-" + "a1B2c3D4e5" * 2
        s = self.start_server(env={"PAYD_DEMO_KEY": key})
        with open(os.path.join(s.data_dir, "demo.key")) as f:
            self.assertEqual(f.read().strip(), key)
        self.assertEqual(stat.S_IMODE(os.stat(os.path.join(s.data_dir, "demo.key")).st_mode),
                         0o600)
        self.assertEqual(self.assertStatus(s.request("GET", "/v1/balance", key=key), 200),
                         {"data": []})
        r = s.request("GET", "/v1/balance", key="sk_" + "0" * 48)
        self.assertError(r, 401, "authentication_error", "api_key_invalid")
        self.assertEqual(s.stop(), 0)
        self.assertIn(key, s.stdout_text(), "the key is printed at start-up")

    def test_new_data_dir_prints_key_and_banner(self):
        s = self.start_server()
        key = s.key
        self.assertEqual(s.stop(), 0)
        out = s.stdout_text()
        self.assertIn(key, out, "the new demo key is printed at start-up")
        # docs: "payd listening on http://HOST:PORT" (a version may come between).
        self.assertRegex(out, r"(?m)^payd\b.*\blistening on http://127\.0\.0\.1:%d\b" % s.port)
        # A second start on the same data directory keeps the key.
        s.start()
        self.assertEqual(s.key, key)
        self.assertEqual(s.request("GET", "/v1/balance").status, 200)

    def test_bad_demo_key_refused(self):
        s = self.start_server(start=False, env={"PAYD_DEMO_KEY": "short"})
        proc = s.spawn()
        try:
            rc = proc.wait(START_DEADLINE_S)
        except Exception:
            self.fail("payd started with PAYD_DEMO_KEY=short (under 16 characters)")
        self.assertNotEqual(rc, 0)


if __name__ == "__main__":
    unittest.main()
