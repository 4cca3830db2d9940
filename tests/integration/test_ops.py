"""
Operations endpoints: /healthz, /readyz, /metrics, and the channel catalogue.
"""

import unittest

from harness import FINAL_DEADLINE_S, PaydTestCase, parse_metrics, run_cli, wait_until

class OpsTest(PaydTestCase):

    def metrics(self):
        r = self.server.request("GET", "/metrics", key=None)
        self.assertEqual(r.status, 200, r)
        ct = r.header("Content-Type") or ""
        self.assertTrue(ct.startswith("text/plain"), ct)
        self.assertIsInstance(r.body, str)
        return parse_metrics(r.body)

    @staticmethod
    def find(samples, name, **want):
        """Sum of the samples of `name` whose labels include `want`; a label
        value given as a callable is a predicate."""
        total, n = 0.0, 0
        for (nm, labels), v in samples.items():
            if nm != name:
                continue
            d = dict(labels)
            ok = True
            for k, w in want.items():
                if callable(w):
                    ok = ok and k in d and w(d[k])
                else:
                    ok = ok and d.get(k) == w
            if ok:
                total += v
                n += 1
        return total, n

    def test_healthz(self):
        r = self.server.request("GET", "/healthz", key=None)
        self.assertEqual(r.status, 200)
        self.assertEqual(r.body, {"status": "ok"})
        self.assertTrue((r.header("Content-Type") or "").startswith("application/json"))
        # No key needed, and a wrong one does not matter either.
        r = self.server.request("GET", "/healthz", key="sk_" + "0" * 48)
        self.assertEqual(r.status, 200)

    def test_version(self):
        cp = run_cli(["version"])
        self.assertEqual(cp.returncode, 0, cp.stderr)
        self.assertTrue(cp.stdout.strip(), "payd version printed nothing")

    def test_readyz(self):
        r = self.server.request("GET", "/readyz", key=None)
        self.assertEqual(r.status, 200)
        self.assertEqual(r.body, {"status": "ready"})

    def test_channels(self):
        r = self.server.request("GET", "/v1/channels")
        body = self.assertStatus(r, 200)
        self.assertIsInstance(body.get("data"), list)
        sandbox = [c for c in body["data"] if c.get("id") == "sandbox"]
        self.assertEqual(len(sandbox), 1, body)
        self.assertEqual(sorted(sandbox[0]["methods"]),
                         sorted(["ok", "declined", "slow", "unknown", "error"]))
        self.assertEqual(sandbox[0]["status"], "up")
        self.assertEqual(len(body["data"]), 1, "only sandbox is configured: %s" % body)

    def test_metrics_format_and_families(self):
        self.server.request("GET", "/v1/channels")
        samples, types = self.metrics()
        self.assertEqual(types.get("payd_http_requests_total"), "counter")
        self.assertEqual(types.get("payd_http_request_duration_seconds"), "histogram")
        names = {n for n, _ in samples}
        for n in ("payd_http_requests_total", "payd_http_request_duration_seconds_bucket",
                  "payd_http_request_duration_seconds_sum",
                  "payd_http_request_duration_seconds_count", "payd_build_info"):
            self.assertIn(n, names)
        for (n, labels), _ in samples.items():
            if n == "payd_http_requests_total":
                self.assertTrue({"route", "method", "status"} <= {k for k, _ in labels}, labels)
            if n == "payd_http_request_duration_seconds_bucket":
                self.assertTrue({"route", "le"} <= {k for k, _ in labels}, labels)
        # Each histogram's +Inf bucket equals its count; buckets are cumulative.
        series = {}
        for (n, labels), v in samples.items():
            if n.startswith("payd_http_request_duration_seconds"):
                d = dict(labels)
                le = d.pop("le", None)
                key = frozenset(d.items())
                series.setdefault(key, {"buckets": [], "count": None})
                if n.endswith("_bucket"):
                    series[key]["buckets"].append((float(le), v))
                elif n.endswith("_count"):
                    series[key]["count"] = v
        self.assertTrue(series)
        for key, h in series.items():
            buckets = sorted(h["buckets"])
            self.assertTrue(buckets and buckets[-1][0] == float("inf"), key)
            self.assertEqual(buckets[-1][1], h["count"], key)
            values = [v for _, v in buckets]
            self.assertEqual(values, sorted(values), key)

    def test_request_counts_go_up(self):
        is_channels = lambda r: "channels" in r
        s0, _ = self.metrics()
        c0, _ = self.find(s0, "payd_http_requests_total", route=is_channels, method="GET",
                          status="200")
        h0, _ = self.find(s0, "payd_http_request_duration_seconds_count", route=is_channels)
        n0, _ = self.find(s0, "payd_http_requests_total", status="404")
        for _ in range(3):
            self.assertEqual(self.server.request("GET", "/v1/channels").status, 200)
        self.assertEqual(self.server.request("GET", "/v1/orders/ord_nope").status, 404)
        s1, _ = self.metrics()
        c1, n = self.find(s1, "payd_http_requests_total", route=is_channels, method="GET",
                          status="200")
        self.assertGreaterEqual(n, 1, "no payd_http_requests_total series for /v1/channels")
        self.assertEqual(c1 - c0, 3)
        h1, _ = self.find(s1, "payd_http_request_duration_seconds_count", route=is_channels)
        self.assertEqual(h1 - h0, 3)
        n1, _ = self.find(s1, "payd_http_requests_total", status="404")
        self.assertGreaterEqual(n1 - n0, 1)
        # The route label is the route, not the raw path with its id.
        for (name, labels), _ in s1.items():
            if name == "payd_http_requests_total":
                self.assertNotIn("ord_nope", dict(labels)["route"])

    def test_payments_total_counts_outcomes(self):
        s0, _ = self.metrics()
        ok0, _ = self.find(s0, "payd_payments_total", channel="sandbox", status="succeeded")
        bad0, _ = self.find(s0, "payd_payments_total", channel="sandbox", status="failed")
        for method in ("ok", "declined"):
            o = self.server.create_order()
            r = self.server.pay(o["id"], method)
            self.assertStatus(r, 202)
            self.server.wait_payment_final(r.body["id"])

        def counted():
            s1, _ = self.metrics()
            ok1, _ = self.find(s1, "payd_payments_total", channel="sandbox", status="succeeded")
            bad1, _ = self.find(s1, "payd_payments_total", channel="sandbox", status="failed")
            return (ok1 - ok0, bad1 - bad0) == (1, 1) or None
        wait_until(counted, timeout=FINAL_DEADLINE_S, what="payd_payments_total to count both outcomes")


if __name__ == "__main__":
    unittest.main()
