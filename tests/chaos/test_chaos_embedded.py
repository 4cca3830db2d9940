"""Chaos, short versions (run by tests/integration/run.py with the rest).

Each runs paybench's open-loop load against a real payd, injects faults
while it runs, lets the system settle, and ends with paycheck (paybench
--check), which reads payd's store and the channel's journal with code of
its own: nothing acknowledged lost, nothing charged twice, nothing stuck,
the ledger balanced.

- payd (embedded) killed with SIGKILL three times under load, restarted at
  once on the same data directory;
- paysim's faults under load: latency spikes, lost answers, resets, a full
  outage, one after another, with its notifications on;
- the data directory's disk (a small tmpfs) filled up under load: payd
  answers 503 storage_full while it cannot write, is killed and restarted
  while the disk is still full, and takes payments again once space
  returns.

The long soak is the same tests for longer (docs/chaos.md):
PAYD_CHAOS_SECONDS sets the load's length (default 8 and 10 s), and
PAYD_CHAOS_SEED the seed of paysim's faults and of the kill times, so a
failing soak can be run again the same way.
"""
import random
import os
import subprocess
import tempfile
import threading
import time

import harness
from harness import PaydTestCase
from paysim import SECRET, Paysim

PAYBENCH = os.path.join(os.path.dirname(os.path.abspath(harness.PAYD_BIN)), "paybench")
SLOW = 3 if os.environ.get("PAYD_TEST_SLOW") else 1
SECONDS = int(os.environ.get("PAYD_CHAOS_SECONDS") or 0)
SEED = int(os.environ.get("PAYD_CHAOS_SEED") or 1)


def paybench(server, seconds, rate, extra=(), channel="sandbox"):
    """Starts paybench --check against server; returns the Popen."""
    cmd = [PAYBENCH, "--url", "http://127.0.0.1:%d" % server.port, "--key", server.key,
           "--scenario", "create-and-pay", "--rate", str(rate), "--duration", str(seconds),
           "--channel", channel, "--settle-timeout", str(10 * SLOW), "--check"]
    if harness.STORE == "postgres":
        pg = harness.postgres()
        cmd += ["--store-url", pg.url(pg.database_for(server.data_dir)),
                "--data-dir", server.data_dir]
    else:
        cmd += ["--data-dir", server.data_dir]
    return subprocess.Popen(cmd + list(extra), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)


def finish(test, bench, timeout=180):
    out, _ = bench.communicate(timeout=timeout)
    lines = [l for l in out.splitlines() if l.strip()]
    test.assertTrue(lines and lines[-1].startswith("check: ok"), out)
    return out


def acknowledged(out):
    for line in out.splitlines():
        if line.startswith("paycheck:") and "acknowledged" in line:
            return int(line.split(" acknowledged")[0].rsplit(",", 1)[1].split()[-1])
    return 0


class KillNineTest(PaydTestCase):
    shared_server = False

    def test_kill9_three_times_under_load(self):
        # A short lease: with PostgreSQL an instance that starts again cannot
        # tell its own dead leases from live ones of other instances, so the
        # payments the killed process held come back when theirs run out.
        s = self.start_server(env={"PAYD_BREAKER_MIN_CALLS": "1000000",
                                   "PAYD_WORKER_LEASE_MS": "2000"})
        s.key  # read the demo key before the first kill
        seconds = SECONDS or 8
        rng = random.Random(SEED)
        bench = paybench(s, seconds, 100)
        started = time.monotonic()
        kills = 0
        while time.monotonic() - started < seconds - 2:
            time.sleep(rng.uniform(1.0, 3.0))
            s.kill9()
            s.start(port=s.port)
            kills += 1
        out = finish(self, bench, timeout=seconds + 180)
        self.assertGreaterEqual(kills, 2)
        self.assertGreater(acknowledged(out), 25 * seconds, out)


class PaysimFaultsTest(PaydTestCase):
    shared_server = False

    def test_faults_one_after_another(self):
        port = harness.free_port()
        paysim = Paysim(notify_delays="0.2,0.5,1,2")
        self.addCleanup(paysim.cleanup)
        paysim.start()
        config = ("[channel.psp]\ntype = http\nurl = http://127.0.0.1:%d\nsecret = %s\n"
                  "timeout_ms = 500\nnotify_url = http://127.0.0.1:%d/v1/notify/psp\n"
                  % (paysim.port, SECRET, port))
        s = self.start_server(config=config, fast=False, start=False,
                              env={"PAYD_BREAKER_MIN_CALLS": "1000000",
                                   "PAYD_WORKER_RETRY_BASE_MS": "50",
                                   "PAYD_WORKER_RETRY_MAX_MS": "500",
                                   "PAYD_WORKER_MAX_ATTEMPTS": "20"})
        s.start(port=port)
        seconds = SECONDS or 10
        bench = paybench(s, seconds, 60, channel="psp",
                         extra=["--paysim", "psp=http://127.0.0.1:%d" % paysim.port])
        faults = [{"latency_ms": {"dist": "exponential", "mean_ms": 200, "max_ms": 2000}},
                  {"lost_answer_rate": 0.3}, {"reset_rate": 0.3}, {"outage": True},
                  {"hang_rate": 0.2}]
        started, n = time.monotonic(), 0
        while time.monotonic() - started < seconds - 1:
            paysim.set_faults(dict(faults[n % len(faults)], seed=SEED * 1000 + n))
            n += 1
            time.sleep(1.8)
        paysim.set_faults({})
        out = finish(self, bench, timeout=seconds + 180)
        self.assertGreater(acknowledged(out), 30 * seconds, out)


def fill(path):
    """Writes path until the disk is full, to the last block."""
    with open(path, "wb", buffering=0) as f:
        for chunk in (1 << 20, 4096, 512):
            try:
                while True:
                    f.write(b"\0" * chunk)
            except OSError:
                pass


class DiskFullTest(PaydTestCase):
    shared_server = False

    def mount_small_disk(self):
        if harness.STORE == "postgres":
            self.skipTest("with PostgreSQL payd's data directory holds no database to fill")
        if os.geteuid() != 0:
            self.skipTest("mounting a small tmpfs needs root")
        mnt = tempfile.mkdtemp(prefix="payd-full-")
        self.addCleanup(os.rmdir, mnt)
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=32m,mode=0700", "tmpfs", mnt],
                       check=True)
        self.addCleanup(subprocess.run, ["umount", mnt], check=True)
        return mnt

    def waitStorageFull(self, s):
        """Waits for a write to be refused 503 storage_full (SQLite first fills
        the space its write-ahead log already holds) and checks the answer."""
        refused = []

        def full():
            r = s.request("POST", "/v1/orders", {"merchant_order_no": harness.unique("F"),
                                                 "amount": 100, "currency": "CNY"})
            if r.status != 201:
                refused.append(r)
            return bool(refused)
        harness.wait_until(full, timeout=15 * SLOW, what="a write refused")
        self.assertError(refused[0], 503, "service_degraded", "storage_full")
        self.assertGreaterEqual(int(refused[0].headers["Retry-After"]), 1)

    def test_disk_full_503_then_recovers_nothing_lost(self):
        mnt = self.mount_small_disk()
        s = self.start_server(data_dir=mnt, env={"PAYD_BREAKER_MIN_CALLS": "1000000",
                                                 "PAYD_WORKER_RETRY_BASE_MS": "50",
                                                 "PAYD_WORKER_RETRY_MAX_MS": "500"})
        s.key
        seconds = SECONDS or 12
        bench = paybench(s, seconds, 80)
        filler = os.path.join(mnt, "filler")
        time.sleep(seconds / 4)
        before = s.create_order()
        fill(filler)
        self.waitStorageFull(s)
        # Reads go on: the order written before the disk filled.
        r = s.request("GET", "/v1/orders/" + before["id"])
        self.assertEqual((r.status, r.body["status"]), (200, "pending_payment"))
        time.sleep(seconds / 8)
        s.kill9()
        s.start(port=s.port)   # on a full disk: starts, and still refuses writes
        self.waitStorageFull(s)
        time.sleep(seconds / 8)
        os.unlink(filler)
        o = wait_for_write(s)
        self.assertEqual(s.request("GET", "/v1/orders/" + o["id"]).body["status"],
                         "pending_payment")
        out = finish(self, bench, timeout=seconds + 180)
        self.assertIn(" 503=", out)                  # the load saw the full disk
        self.assertGreater(acknowledged(out), 20 * seconds, out)


def wait_for_write(s):
    """Creates an order once payd can write again; returns it."""
    got = []

    def written():
        r = s.request("POST", "/v1/orders", {"merchant_order_no": harness.unique("R"),
                                             "amount": 100, "currency": "CNY"})
        if r.status == 201:
            got.append(r.body)
        return bool(got)
    harness.wait_until(written, timeout=15 * SLOW, what="payd writing again")
    return got[0]


if __name__ == "__main__":
    import unittest
    unittest.main()
