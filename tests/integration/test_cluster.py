"""
test_cluster.py - payd's cluster mode, on the local cluster of
deploy/local-cluster/up: PostgreSQL, Redis, two api instances, two worker
instances, NATS JetStream and nginx, all on loopback.

These run in the PostgreSQL pass of the suite (PAYD_TEST_STORE=postgres),
where the cluster's engines are installed; the SQLite pass skips them.
"""

import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time
import unittest

import harness
from harness import FINAL_DEADLINE_S, REPO, SLOW, unique, wait_until

UP = os.path.join(REPO, "deploy", "local-cluster", "up")
DOWN = os.path.join(REPO, "deploy", "local-cluster", "down")


def http(url, method, path, body=None, key=None, headers=None, timeout=30):
    """One request to a base URL (http://127.0.0.1:PORT)."""
    port = int(url.rsplit(":", 1)[1])
    h = dict(headers or {})
    if key:
        h["Authorization"] = "Bearer " + key
    return harness.http_request(port, method, path, body, h, timeout=timeout)


class Cluster:
    """One local cluster in a temporary directory: started by `up`,
    stopped by `down` (which signals the recorded pids only)."""

    def __init__(self, extra_env=None):
        self.dir = tempfile.mkdtemp(prefix="payd-cluster-")
        env = harness.child_env({"PAYD_BIN": harness.PAYD_BIN})
        if extra_env:
            env["PAYD_EXTRA_ENV"] = " ".join("%s=%s" % kv for kv in extra_env.items())
        cp = subprocess.run([UP, self.dir], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, timeout=180)
        self.up_log = cp.stdout
        if cp.returncode != 0:
            raise AssertionError("local-cluster up failed:\n" + cp.stdout)
        self.env = {}
        with open(os.path.join(self.dir, "cluster.env")) as f:
            for line in f:
                k, _, v = line.strip().partition("=")
                self.env[k] = v.strip('"')
        self.api_urls = self.env["API_URLS"].split()
        self.lb = self.env["LB_URL"]
        self.key = self.env["DEMO_KEY"]
        self.api_pids = [int(p) for p in self.env["API_PIDS"].split()]
        self.worker_pids = [int(p) for p in self.env["WORKER_PIDS"].split()]
        self._procs = []

    def down(self):
        for pid in self.worker_pids + self.api_pids:
            try:
                os.kill(pid, signal.SIGCONT)  # a stopped process cannot stop
            except ProcessLookupError:
                pass
        # cluster.env holds the pids of what was started again too, so `down`
        # stops everything in its order (the instances before PostgreSQL).
        subprocess.run([DOWN, self.dir], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                       timeout=180)
        for proc in self._procs:  # reaped; killed if `down` missed one
            if proc.poll() is None:
                proc.kill()
            proc.wait(30)
        if os.environ.get("PAYD_KEEP_TMP") != "1":
            shutil.rmtree(self.dir, True)

    def logs(self):
        out = []
        for name in sorted(os.listdir(self.dir)):
            path = os.path.join(self.dir, name, "stderr.log")
            if os.path.exists(path):
                with open(path, errors="replace") as f:
                    out.append("--- %s ---\n%s" % (name, f.read()[-3000:]))
        return "\n".join(out)

    def db(self, sql, params=()):
        import psycopg2
        con = psycopg2.connect(self.env["PG_URL"])
        try:
            cur = con.cursor()
            cur.execute(sql.replace("?", "%s"), tuple(params))
            return cur.fetchall()
        finally:
            con.close()

    def restart_nats(self, wipe=False):
        """Kills NATS (SIGKILL), optionally deletes its JetStream data (the
        broker loses every message), and starts it again on the same port
        and directory."""
        self.kill_service("NATS")
        if wipe:
            shutil.rmtree(os.path.join(self.env["NATS_STORE"], "jetstream"), True)
        self.start_service("NATS")

    def kill_service(self, name, sig=signal.SIGKILL):
        """Kills NATS, REDIS or PG (by default with SIGKILL; PostgreSQL is
        best crashed with SIGQUIT, its immediate shutdown: SIGKILL would
        leave its backends holding the shared memory) by the pid `up`
        recorded (or the one start_service gave it); waits for it to die."""
        pid = int(self.env[name + "_PID"])
        os.kill(pid, sig)
        wait_dead(pid, name)

    def start_service(self, name):
        """Starts NATS, REDIS or PG again as it ran (same port, same
        directory); the new pid goes into cluster.env for `down`."""
        proc = self._spawn(name.lower(), log=(name == "PG" and "postgres.log"))
        self._set_env(name + "_PID", str(proc.pid))

    def restart_instance(self, kind, n):
        """Starts payd instance `kind` n (kind "api" or "worker", n from 0)
        again as `up` ran it, after it was killed; waits until it is ready."""
        name = "%s%d" % (kind, n + 1)
        pids = self.api_pids if kind == "api" else self.worker_pids
        wait_dead(pids[n], name)
        proc = self._spawn(name, stdout="stdout.log", log="stderr.log")
        pids[n] = proc.pid
        self._set_env(kind.upper() + "_PIDS", " ".join(str(p) for p in pids))
        urls = self.env[kind.upper() + "_URLS"].split()
        port = int(urls[n].rsplit(":", 1)[1])

        def ready():
            if proc.poll() is not None:
                raise AssertionError("%s exited %s:\n%s" % (name, proc.returncode, self.logs()))
            try:
                return harness.http_request(port, "GET", "/readyz", timeout=1).status == 200
            except OSError:
                return False
        wait_until(ready, timeout=30, what="%s ready again" % name)

    def _spawn(self, sub, stdout=None, log=None):
        """Runs DIR/sub/cmd (an argument a line, as `up` wrote it), its
        output appended to DIR/sub/stdout and DIR/sub/log."""
        d = os.path.join(self.dir, sub)
        with open(os.path.join(d, "cmd")) as f:
            argv = f.read().split("\n")[:-1]
        out = open(os.path.join(d, stdout), "a") if stdout else subprocess.DEVNULL
        err = open(os.path.join(d, log), "a") if log else subprocess.DEVNULL
        try:
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                                    start_new_session=True, cwd=self.dir)
        finally:
            for f in (out, err):
                if f is not subprocess.DEVNULL:
                    f.close()
        self._procs.append(proc)  # our children: down() must not wait for their zombies
        return proc

    def _set_env(self, key, value):
        """Sets key in self.env and in cluster.env, which `down` reads."""
        self.env[key] = value
        path = os.path.join(self.dir, "cluster.env")
        with open(path) as f:
            lines = [l for l in f if not l.startswith(key + "=")]
        lines.append('%s="%s"\n' % (key, value))
        with open(path, "w") as f:
            f.writelines(lines)

    def charges(self):
        """serial_no -> count in the sandbox journal (one PSP for all workers)."""
        rows, _ = harness.db_query(os.path.join(self.dir, "sandbox.db"),
                                   "SELECT serial_no, count(*) FROM charges"
                                   " WHERE status = 'succeeded' GROUP BY serial_no")
        return dict(rows)

    def redis(self, *args):
        port = self.env["REDIS_URL"].rsplit(":", 1)[1]
        return subprocess.run(["redis-cli", "-p", port] + list(args), stdout=subprocess.PIPE,
                              text=True, timeout=10).stdout.strip()

    def order(self, url=None, amount=1999):
        r = http(url or self.lb, "POST", "/v1/orders",
                 {"merchant_order_no": unique("C"), "amount": amount, "currency": "CNY"},
                 key=self.key)
        assert r.status == 201, r
        return r.body

    def pay(self, order_id, url=None, method="ok", idem=None):
        h = {"Idempotency-Key": idem} if idem else None
        return http(url or self.lb, "POST", "/v1/payments",
                    {"order_id": order_id, "channel": "sandbox", "method": method},
                    key=self.key, headers=h)

    def payment(self, pid, url=None):
        return http(url or self.lb, "GET", "/v1/payments/" + pid, key=self.key).body

    def wait_final(self, pid, timeout=FINAL_DEADLINE_S):
        return wait_until(lambda: (lambda p: p if p.get("status") != "processing" else None)(
            self.payment(pid)), timeout=timeout, what="payment %s final" % pid)

    def assert_money_invariants(self, test):
        """Whatever happened: at most one succeeded payment per order, one
        succeeded charge per succeeded payment and none for anything else,
        and a ledger that balances and matches the succeeded payments."""
        succeeded = self.db("SELECT serial_no, amount FROM payments WHERE status = 'succeeded'")
        per_order = self.db("SELECT order_id, count(*) FROM payments WHERE status = 'succeeded'"
                            " GROUP BY order_id HAVING count(*) > 1")
        test.assertEqual(per_order, [], "an order with two succeeded payments")
        charges = self.charges()
        test.assertEqual(sorted(charges), sorted(s for s, _ in succeeded),
                         "charges and succeeded payments differ")
        test.assertTrue(all(n == 1 for n in charges.values()), "a doubled charge: %r" % charges)
        total, merchant = self.db(
            "SELECT coalesce(sum(amount), 0), coalesce(sum(amount) FILTER (WHERE account LIKE"
            " 'merchant:%%'), 0) FROM ledger_entries")[0]
        test.assertEqual(total, 0, "the ledger does not balance")
        test.assertEqual(merchant, sum(a for _, a in succeeded))


def wait_dead(pid, what):
    """Waits until process pid is gone (or a zombie)."""
    def dead():
        try:
            with open("/proc/%d/stat" % pid) as f:
                return f.read().rsplit(")", 1)[1].split()[0] == "Z"
        except FileNotFoundError:
            return True
    wait_until(dead, timeout=30, what="%s (pid %d) to die" % (what, pid))


class Load:
    """Clients paying new orders through nginx, one Idempotency-Key each,
    until stop(): `acked` collects the payments answered 202, `errors`
    every other answer or failure (expected while something is down)."""

    def __init__(self, cluster, clients):
        self.cluster, self.acked, self.errors = cluster, [], []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._client) for _ in range(clients)]
        for t in self._threads:
            t.start()

    def _client(self):
        c = self.cluster
        while not self._stop.is_set():
            try:
                r = http(c.lb, "POST", "/v1/orders",
                         {"merchant_order_no": unique("L"), "amount": 500, "currency": "CNY"},
                         key=c.key, timeout=10)
                if r.status != 201:
                    self.errors.append(r.status)
                    continue
                p = c.pay(r.body["id"], idem=unique("k"))
                if p.status == 202:
                    self.acked.append(p.body["id"])
                else:
                    self.errors.append(p.status)
            except OSError as e:
                self.errors.append(str(e))

    def stop(self):
        self._stop.set()
        for t in self._threads:
            t.join()
        return self.acked


@unittest.skipUnless(harness.STORE == "postgres", "cluster tests run in the PostgreSQL pass")
class ClusterTest(unittest.TestCase):
    """One cluster for the class; tests that break it start their own."""

    extra_env = {"PAYD_WORKER_RETRY_BASE_MS": "50", "PAYD_CHANNEL_SANDBOX_TIMEOUT_MS": "3000"}

    @classmethod
    def setUpClass(cls):
        cls.cluster = Cluster(cls.extra_env)

    @classmethod
    def tearDownClass(cls):
        cls.cluster.down()

    def server_logs(self):
        return self.cluster.logs()

    def test_flow_through_every_api_instance(self):
        c = self.cluster
        for url in c.api_urls + [c.lb]:
            o = c.order(url)
            r = c.pay(o["id"], url, idem=unique("k"))
            self.assertEqual(r.status, 202, r)
            # read back through another instance
            other = c.api_urls[(c.api_urls.index(url) + 1) % len(c.api_urls)] \
                if url in c.api_urls else c.api_urls[0]
            p = c.wait_final(r.body["id"])
            self.assertEqual(p["status"], "succeeded")
            self.assertEqual(http(other, "GET", "/v1/orders/" + o["id"], key=c.key).body["status"],
                             "paid")
        c.assert_money_invariants(self)

    def test_idempotency_key_across_instances(self):
        c = self.cluster
        o = c.order()
        k = unique("k")
        a = c.pay(o["id"], c.api_urls[0], idem=k)
        b = c.pay(o["id"], c.api_urls[1], idem=k)
        self.assertEqual(a.status, 202)
        self.assertEqual(b.status, 202)
        self.assertEqual(a.body, b.body)
        self.assertEqual(b.header("Idempotent-Replayed"), "true")

    def test_racing_payments_on_two_instances(self):
        """Many rounds of two payments for one order with different keys,
        sent at once to the two api instances: one is accepted, one charge."""
        c = self.cluster
        accepted = []
        for _ in range(20):
            o = c.order()
            results = [None, None]
            barrier = threading.Barrier(2)

            def send(i):
                barrier.wait()
                results[i] = c.pay(o["id"], c.api_urls[i], idem=unique("race"))

            threads = [threading.Thread(target=send, args=(i,)) for i in range(2)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            ok = [r for r in results if r.status == 202]
            self.assertEqual(len(ok), 1, [r for r in results])
            for r in results:
                if r.status != 202:
                    self.assertEqual(r.status, 409, r)
                    self.assertIn(r.body["error"]["code"],
                                  ("payment_in_progress", "order_already_paid"))
            accepted.append(ok[0].body["id"])
        for pid in accepted:
            self.assertEqual(c.wait_final(pid)["status"], "succeeded")
        c.assert_money_invariants(self)

    def test_worker_instance_serves_no_api(self):
        c = self.cluster
        url = c.env["WORKER_URLS"].split()[0]
        r = http(url, "POST", "/v1/orders", {"merchant_order_no": "x", "amount": 1,
                                             "currency": "CNY"}, key=c.key)
        self.assertEqual(r.status, 404)
        self.assertEqual(http(url, "GET", "/healthz").status, 200)


class OwnClusterCase(unittest.TestCase):
    """A test that starts (self.cluster = Cluster(...)) and breaks its own
    cluster, stopped after it."""

    def setUp(self):
        self.cluster = None

    def tearDown(self):
        if self.cluster:
            self.cluster.down()

    def server_logs(self):
        return self.cluster.logs() if self.cluster else ""


@unittest.skipUnless(harness.STORE == "postgres", "cluster tests run in the PostgreSQL pass")
class ClusterFaultTest(OwnClusterCase):
    """Each test breaks its own cluster."""

    def test_paused_lock_holder_is_fenced_out(self):
        """SIGSTOP a worker while it holds an order's lock, past the lock's
        TTL; the other worker takes the lock and completes the payment;
        SIGCONT the first: its write is refused and the order is paid once."""
        c = self.cluster = Cluster({"PAYD_WORKER_LEASE_MS": "1000",
                                    "PAYD_WORKER_RETRY_BASE_MS": "50",
                                    "PAYD_CHANNEL_SANDBOX_TIMEOUT_MS": "3000"})
        first, second = c.worker_pids
        os.kill(second, signal.SIGSTOP)  # the first worker takes the payment
        o = c.order()
        r = c.pay(o["id"], method="slow")  # the sandbox answers after ~2 s
        self.assertEqual(r.status, 202)
        pid, serial = r.body["id"], r.body["serial_no"]
        lock_key = "payd:lock:" + o["id"]
        wait_until(lambda: c.redis("EXISTS", lock_key) == "1", timeout=10,
                   what="the first worker to hold the order's lock")
        os.kill(first, signal.SIGSTOP)  # inside its channel call, holding the lock
        os.kill(second, signal.SIGCONT)
        p = c.wait_final(pid, timeout=FINAL_DEADLINE_S * 2)
        self.assertEqual(p["status"], "succeeded")
        os.kill(first, signal.SIGCONT)
        log1 = os.path.join(c.dir, "worker1", "stderr.log")
        wait_until(lambda: "payment_stale_fence" in open(log1).read(),
                   timeout=FINAL_DEADLINE_S, what="the first worker's write to be refused")
        self.assertEqual(c.charges().get(serial), 1)
        self.assertEqual(c.db("SELECT count(*) FROM payments WHERE order_id = ?"
                              " AND status = 'succeeded'", (o["id"],))[0][0], 1)
        self.assertEqual(c.db("SELECT count(*) FROM ledger_entries WHERE transfer_id = ?",
                              (pid,))[0][0], 2)
        c.assert_money_invariants(self)

    def test_payments_wait_out_a_nats_outage(self):
        """NATS down: payments are still accepted (the outbox is in
        PostgreSQL) and stay processing; NATS back: the relay publishes
        them and they succeed, once each."""
        # A pull answered while the client was reconnecting comes again after
        # the ack wait (the lease): a short one keeps the test short.
        c = self.cluster = Cluster({"PAYD_WORKER_RETRY_BASE_MS": "50",
                                    "PAYD_WORKER_LEASE_MS": "3000"})
        c.kill_service("NATS")
        pids = []
        for _ in range(10):
            r = c.pay(c.order()["id"], idem=unique("k"))
            self.assertEqual(r.status, 202, r)
            pids.append(r.body["id"])
        time.sleep(1.5)
        self.assertTrue(all(c.payment(p)["status"] == "processing" for p in pids))
        c.start_service("NATS")
        for p in pids:
            self.assertEqual(c.wait_final(p)["status"], "succeeded")
        c.assert_money_invariants(self)

    def test_broker_losing_its_data_delays_and_loses_nothing(self):
        """Under load, NATS is killed and its JetStream data deleted: the
        messages it had are gone. The sweeper sends every payment still
        processing again, and every acknowledged payment succeeds once."""
        c = self.cluster = Cluster({"PAYD_WORKER_RETRY_BASE_MS": "50",
                                    "PAYD_WORKER_LEASE_MS": "3000",
                                    "PAYD_WORKER_RETRY_MAX_MS": "500",
                                    "PAYD_QUEUE_SWEEP_AFTER_MS": "2000"})
        load = Load(c, 3)
        time.sleep(2)
        c.restart_nats(wipe=True)
        time.sleep(2)
        acked = load.stop()
        self.assertGreater(len(acked), 20, "too little load got through: %r" % load.errors[:5])
        for p in acked:
            self.assertEqual(c.wait_final(p, timeout=FINAL_DEADLINE_S * 2)["status"], "succeeded")
        c.assert_money_invariants(self)

    def test_redis_restarted_under_load(self):
        """Redis (the order locks) killed with SIGKILL under load and started
        again: requests fail or wait while it is away (a payment needs its
        order's lock), payments continue once it is back, every acknowledged
        payment succeeds exactly once and the ledger balances."""
        c = self.cluster = Cluster({"PAYD_WORKER_RETRY_BASE_MS": "50",
                                    "PAYD_WORKER_LEASE_MS": "3000"})
        load = Load(c, 3)
        time.sleep(2)
        before = len(load.acked)
        c.kill_service("REDIS")
        time.sleep(2)
        c.start_service("REDIS")
        wait_until(lambda: c.redis("PING") == "PONG", timeout=10, what="Redis back")
        back = len(load.acked)
        time.sleep(3)
        acked = load.stop()
        self.assertGreater(before, 5, "too little load got through: %r" % load.errors[:5])
        self.assertGreater(len(acked), back + 5, "payments did not continue after Redis came back")
        for p in acked:
            self.assertEqual(c.wait_final(p, timeout=FINAL_DEADLINE_S * 2)["status"], "succeeded")
        c.assert_money_invariants(self)

    def test_kill9_worker_and_api_under_load(self):
        """Payments through nginx while one worker and then one api instance
        are killed with SIGKILL: every acknowledged payment ends succeeded,
        none is charged twice, the ledger balances."""
        c = self.cluster = Cluster({"PAYD_WORKER_LEASE_MS": "2000",
                                    "PAYD_WORKER_RETRY_BASE_MS": "50"})
        load = Load(c, 4)
        time.sleep(2)
        os.kill(c.worker_pids[0], signal.SIGKILL)
        time.sleep(2)
        os.kill(c.api_pids[0], signal.SIGKILL)
        time.sleep(3 if not SLOW else 6)
        acked = load.stop()
        self.assertGreater(len(acked), 20, "too little load got through: %r" % load.errors[:5])
        for pid in acked:
            p = c.wait_final(pid, timeout=FINAL_DEADLINE_S * 2)
            self.assertEqual(p["status"], "succeeded", p)
        c.assert_money_invariants(self)


if __name__ == "__main__":
    unittest.main()
