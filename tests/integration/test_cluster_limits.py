"""
test_cluster_limits.py - what the instances of a cluster share through
Redis, on the local cluster of deploy/local-cluster/up (two api instances):

- a merchant's rate limit holds across the instances (20/s in total, not
  20/s each);
- `payd merchant rotate-key` run against one instance's data directory
  makes the old key fail on every instance within a second (pub/sub);
- with Redis stopped (SIGSTOP), each instance enforces its share of the
  limit: requests are answered, about 10/s each, neither unlimited nor all
  refused; and after SIGCONT the limit is shared again.

Like test_cluster.py these run in the PostgreSQL pass of the suite
(PAYD_TEST_STORE=postgres); the SQLite pass skips them.
"""

import http.client as httpclient
import os
import re
import signal
import subprocess
import threading
import time
import unittest

import harness
from harness import FINAL_DEADLINE_S, PAYD_BIN, SLOW, wait_until
from test_cluster import Cluster, http

RATE = 20          # PAYD_LIMITS_MERCHANT_RPS, and the burst
WARM_S = 1.0       # load before counting: empties the burst
MEASURE_S = 3.0
TOLERANCE = 0.25


class Load:
    """Keeps GET /v1/channels going to each of `urls` from one thread a URL
    (keep-alive; a few hundred requests a second at most, far above the
    limit) and records (monotonic time, url, status) of each answer;
    status None for a connection that failed."""

    def __init__(self, urls, key):
        self.urls, self.key = urls, key
        self.answers = []
        self.lock = threading.Lock()
        self.stop_event = threading.Event()
        self.threads = [threading.Thread(target=self._run, args=(u,), daemon=True)
                        for u in urls]

    def _run(self, url):
        host, port = url.rsplit("/", 1)[1].split(":")
        conn = None
        while not self.stop_event.is_set():
            status = None
            try:
                if conn is None:
                    conn = httpclient.HTTPConnection(host, int(port), timeout=10)
                conn.request("GET", "/v1/channels",
                             headers={"Authorization": "Bearer " + self.key})
                resp = conn.getresponse()
                resp.read()
                status = resp.status
            except (OSError, httpclient.HTTPException):
                if conn is not None:
                    conn.close()
                conn = None
            with self.lock:
                self.answers.append((time.monotonic(), url, status))
            time.sleep(0.004)
        if conn is not None:
            conn.close()

    def __enter__(self):
        self.t0 = time.monotonic()
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc):
        self.stop_event.set()
        for t in self.threads:
            t.join(timeout=30)

    def count(self, start, end, url=None, status=200):
        """Answers with `status` from `url` (or any) in [t0 + start, t0 + end)."""
        with self.lock:
            return sum(1 for t, u, s in self.answers
                       if self.t0 + start <= t < self.t0 + end and s == status
                       and (url is None or u == url))

    def statuses(self):
        with self.lock:
            return sorted(set(s for _, _, s in self.answers), key=str)


def metric(url, name, labels):
    """The value of one sample in url's /metrics, or None."""
    text = http(url, "GET", "/metrics").body
    m = re.search(r"^%s\{%s\} (\S+)$" % (re.escape(name), re.escape(labels)), text, re.M)
    return float(m.group(1)) if m else None


@unittest.skipUnless(harness.STORE == "postgres", "cluster tests run in the PostgreSQL pass")
class ClusterLimitsTest(unittest.TestCase):
    """One cluster for the class, with the merchant limit at RATE/s (burst
    RATE) in every instance. Each test waits for the bucket to refill."""

    @classmethod
    def setUpClass(cls):
        cls.cluster = Cluster({"PAYD_LIMITS_MERCHANT_RPS": str(RATE),
                               "PAYD_LIMITS_MERCHANT_BURST": str(RATE)})

    @classmethod
    def tearDownClass(cls):
        cls.cluster.down()

    def server_logs(self):
        return self.cluster.logs()

    def setUp(self):
        c = self.cluster
        for url in c.api_urls:
            wait_until(lambda: http(url, "GET", "/admin/guards").body["merchant"]["instances"] == 2,
                       timeout=10, what="%s to count 2 api instances" % url)
        time.sleep(1.5)  # the merchant's bucket is full again (it refills in 1 s)

    def assertAbout(self, got, want, what):
        lo, hi = want * (1 - TOLERANCE), want * (1 + TOLERANCE)
        self.assertTrue(lo <= got <= hi, "%s: %d admitted, expected %.0f (%.0f..%.0f)"
                        % (what, got, want, lo, hi))

    def test_merchant_limit_holds_across_instances(self):
        c = self.cluster
        with Load(c.api_urls, c.key) as load:
            time.sleep(WARM_S + MEASURE_S + 0.2)
        total = load.count(WARM_S, WARM_S + MEASURE_S)
        per_instance = [load.count(WARM_S, WARM_S + MEASURE_S, url=u) for u in c.api_urls]
        refused = load.count(WARM_S, WARM_S + MEASURE_S, status=429)
        self.assertGreater(refused, total, "the load did not exceed the limit")
        self.assertAbout(total, RATE * MEASURE_S, "both instances together")
        self.assertTrue(all(n > 0 for n in per_instance), per_instance)
        self.assertEqual(load.statuses(), [200, 429])
        for url in c.api_urls:
            self.assertEqual(metric(url, "payd_limiter_shared", 'limiter="merchant"'), 1)
            self.assertEqual(metric(url, "payd_limiter_fallback_total", 'limiter="merchant"'), 0)

    def test_rotated_key_fails_on_every_instance(self):
        c = self.cluster
        old = c.key
        # Every instance listens (a subscription broken by an earlier test
        # may still be coming back).
        instances = len(c.api_pids) + len(c.worker_pids)
        wait_until(lambda: c.redis("PUBSUB", "NUMSUB", "payd:keys").split()[-1]
                   == str(instances), timeout=15, what="every instance to subscribe")
        for url in c.api_urls:  # cached on both
            self.assertEqual(http(url, "GET", "/v1/channels", key=old).status, 200)
            self.assertEqual(http(url, "GET", "/v1/channels", key=old).status, 200)
        env = harness.child_env({"PAYD_STORE_BACKEND": "postgres",
                                 "PAYD_STORE_URL": c.env["PG_URL"],
                                 "PAYD_LOCK_BACKEND": "redis",
                                 "PAYD_LOCK_URL": c.env["REDIS_URL"]})
        cp = subprocess.run([PAYD_BIN, "merchant", "rotate-key", "demo", "--data-dir",
                             os.path.join(c.dir, "api1")], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, timeout=60)
        done = time.monotonic()
        self.assertEqual(cp.returncode, 0, cp.stderr)
        self.assertEqual(cp.stderr, "")
        new = cp.stdout.strip().splitlines()[-1]
        self.assertTrue(new.startswith("sk_") and new != old, cp.stdout)
        c.key = new  # for the other tests
        deadline = 1.0 * (3 if SLOW else 1)
        refused = {}
        while len(refused) < len(c.api_urls) and time.monotonic() - done < deadline + 0.5:
            for url in c.api_urls:
                if url not in refused and \
                        http(url, "GET", "/v1/channels", key=old).status == 401:
                    refused[url] = time.monotonic() - done
            time.sleep(0.02)
        self.assertEqual(sorted(refused), sorted(c.api_urls),
                         "the old key still works on some instance: %r" % refused)
        self.assertTrue(all(t <= deadline for t in refused.values()), refused)
        for url in c.api_urls:
            r = http(url, "GET", "/v1/channels", key=old)
            self.assertEqual(r.status, 401)
            self.assertEqual(r.body["error"]["code"], "api_key_invalid")
            self.assertEqual(http(url, "GET", "/v1/channels", key=new).status, 200)

    def test_redis_stopped_each_instance_takes_its_share(self):
        c = self.cluster
        redis_pid = int(c.env["REDIS_PID"])
        os.kill(redis_pid, signal.SIGSTOP)
        try:
            # The first take waits out the Redis client's 1 s timeout; then
            # every take knows at once that Redis is down.
            with Load(c.api_urls, c.key) as load:
                time.sleep(1.0 + WARM_S + MEASURE_S + 0.2)
            start, end = 1.0 + WARM_S, 1.0 + WARM_S + MEASURE_S
            share = RATE / len(c.api_urls)
            for url in c.api_urls:
                self.assertAbout(load.count(start, end, url=url), share * MEASURE_S,
                                 "%s alone, with Redis stopped" % url)
            self.assertEqual(load.count(0, end + 1, status=None), 0,
                             "requests went unanswered")
            self.assertEqual(load.statuses(), [200, 429])
            for url in c.api_urls:
                self.assertEqual(metric(url, "payd_limiter_shared", 'limiter="merchant"'), 0)
                self.assertGreater(
                    metric(url, "payd_limiter_fallback_total", 'limiter="merchant"'), 0)
                self.assertEqual(http(url, "GET", "/admin/guards").body["merchant"]["shared"],
                                 False)
        finally:
            os.kill(redis_pid, signal.SIGCONT)

        def shared_again():
            for url in c.api_urls:
                http(url, "GET", "/v1/channels", key=c.key)  # a take notices
            return all(metric(url, "payd_limiter_shared", 'limiter="merchant"') == 1
                       for url in c.api_urls)

        wait_until(shared_again, timeout=FINAL_DEADLINE_S, interval=0.2,
                   what="the limit to be shared again")
        # Said once per outage, not once per request (Redis may have come
        # back to the client in two steps, making two short outages).
        for n in (1, 2):
            with open(os.path.join(c.dir, "api%d" % n, "stderr.log")) as f:
                log = f.read()
            began = log.count('"limits_local_fallback"')
            self.assertTrue(1 <= began <= 2, "api%d: %d" % (n, began))
            self.assertEqual(log.count('"limits_shared_again"'), began, "api%d" % n)


if __name__ == "__main__":
    unittest.main()
