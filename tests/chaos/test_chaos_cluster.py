"""Chaos in cluster mode, short version (the PostgreSQL pass of the suite).

paybench's open-loop load goes through nginx to the local cluster of
deploy/local-cluster/up (PostgreSQL, Redis, NATS JetStream, two api and two
worker instances) while its parts fail one after another:

- a worker instance killed with SIGKILL, started again a second later;
- an api instance killed with SIGKILL, started again a second later;
- a worker stopped (SIGSTOP) past its order locks' TTL, then continued: its
  late writes carry a stale fencing token and are refused;
- Redis (the locks) killed and started again;
- NATS (the queue) killed and started again;
- PostgreSQL crashed (SIGQUIT, its immediate shutdown: recovery from its
  WAL on start) and started again.

Then the system settles and paycheck reads PostgreSQL and the sandbox
journal (one file for all workers: it stands for the PSP) with code of its
own: nothing acknowledged lost, nothing charged twice, nothing stuck, the
ledger balanced.

The long soak (docs/chaos.md): PAYD_CHAOS_SECONDS sets the load's length
(the faults come round again, in an order PAYD_CHAOS_SEED shuffles).
"""
import os
import random
import signal
import subprocess
import time
import unittest

import harness
import test_cluster
from test_cluster import Cluster

PAYBENCH = os.path.join(os.path.dirname(os.path.abspath(harness.PAYD_BIN)), "paybench")
SLOW = 3 if os.environ.get("PAYD_TEST_SLOW") else 1
SECONDS = int(os.environ.get("PAYD_CHAOS_SECONDS") or 0)
SEED = int(os.environ.get("PAYD_CHAOS_SEED") or 1)
LEASE_MS = 2000  # the workers' lease, and so their order locks' TTL


@unittest.skipUnless(harness.STORE == "postgres", "cluster tests run in the PostgreSQL pass")
class ClusterChaosTest(test_cluster.OwnClusterCase):

    # ---- the faults -------------------------------------------------------------

    def kill_worker(self, c):
        os.kill(c.worker_pids[0], signal.SIGKILL)
        time.sleep(1)
        c.restart_instance("worker", 0)

    def kill_api(self, c):
        os.kill(c.api_pids[0], signal.SIGKILL)
        time.sleep(1)
        c.restart_instance("api", 0)

    def pause_worker(self, c):
        pid = c.worker_pids[1]
        os.kill(pid, signal.SIGSTOP)
        time.sleep(LEASE_MS / 1000 + 1)
        os.kill(pid, signal.SIGCONT)

    def restart_redis(self, c):
        c.kill_service("REDIS")
        time.sleep(1)
        c.start_service("REDIS")

    def restart_nats(self, c):
        c.kill_service("NATS")
        time.sleep(1)
        c.start_service("NATS")

    def crash_postgres(self, c):
        c.kill_service("PG", signal.SIGQUIT)
        time.sleep(1)
        c.start_service("PG")

    FAULTS = ("kill_worker", "kill_api", "pause_worker", "restart_redis", "restart_nats",
              "crash_postgres")

    # ---- the test ---------------------------------------------------------------

    def test_every_part_fails_under_load(self):
        c = self.cluster = Cluster({"PAYD_WORKER_LEASE_MS": str(LEASE_MS),
                                    "PAYD_WORKER_RETRY_BASE_MS": "50",
                                    "PAYD_WORKER_RETRY_MAX_MS": "500",
                                    "PAYD_WORKER_MAX_ATTEMPTS": "50",
                                    "PAYD_QUEUE_SWEEP_AFTER_MS": "3000",
                                    "PAYD_BREAKER_MIN_CALLS": "1000000"})
        rng = random.Random(SEED)
        seconds = SECONDS or 26
        cmd = [PAYBENCH, "--url", c.lb, "--key", c.key, "--scenario", "create-and-pay",
               "--rate", "40", "--duration", str(seconds),
               "--settle-timeout", str(20 * SLOW), "--check",
               "--store-url", c.env["PG_URL"], "--data-dir", c.dir]
        for url in c.env["WORKER_URLS"].split():
            cmd += ["--metrics-url", url]
        bench = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        done = []
        try:
            started = time.monotonic()
            faults = []
            time.sleep(2)
            while time.monotonic() - started < seconds - 4:
                if not faults:
                    faults = list(self.FAULTS)
                    if SECONDS:
                        rng.shuffle(faults)
                name = faults.pop(0)
                getattr(self, name)(c)
                done.append(name)
                time.sleep(1.5)
        finally:
            out, _ = bench.communicate(timeout=seconds + 240 * SLOW)
        lines = [l for l in out.splitlines() if l.strip()]
        self.assertTrue(lines and lines[-1].startswith("check: ok"),
                        "faults %s\n%s" % (done, out))
        self.assertEqual(set(done), set(self.FAULTS), "not every fault came: %s" % done)
        acked = [l for l in lines if l.startswith("paycheck:") and "acknowledged" in l]
        self.assertTrue(acked, out)
        n = int(acked[0].split(" acknowledged")[0].rsplit(",", 1)[1].split()[-1])
        self.assertGreater(n, 10 * seconds, out)


if __name__ == "__main__":
    unittest.main()
