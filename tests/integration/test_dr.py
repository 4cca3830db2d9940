"""Disaster recovery: short versions of the drills of deploy/dr/drill.

Each drill starts the two-site topology of deploy/dr/up (PostgreSQL primary
in site A with a synchronous standby in B and the failover controller,
Redis with Sentinel, a three-node NATS cluster, payd in both sites, nginx),
runs paybench at a fixed rate through nginx, kills part of it with SIGKILL
and, after the system settles, checks the money with paycheck. Asserted:
nothing acknowledged is lost (RPO = 0), nothing is charged twice, nothing
stays processing, and payments succeed again after the fault. The RTO is
reported, not asserted (docs/DR.md has the measured table).

They run in the PostgreSQL pass of the suite, where the engines are
installed; the SQLite pass skips them.
"""
import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
import unittest

import harness
from harness import REPO, SLOW, wait_until
from test_cluster import wait_dead

DR = os.path.join(REPO, "deploy", "dr")
DRILL = os.path.join(DR, "drill")


def run_drill(name):
    env = dict(os.environ, RATE="40", DURATION="20", FAULT_AT="6", SETTLE=str(60 * SLOW or 60),
               PAYD_BIN=harness.PAYD_BIN,
               PAYBENCH=os.path.join(os.path.dirname(harness.PAYD_BIN), "paybench"))
    env.pop("RESULTS", None)
    p = subprocess.run([DRILL, name], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       text=True, timeout=600 * (2 if SLOW else 1))
    rows = [l for l in p.stdout.splitlines() if l.startswith("| %s |" % name)]
    return p, rows


@unittest.skipUnless(harness.STORE == "postgres", "DR drills run in the PostgreSQL pass")
class DrillTest(unittest.TestCase):

    def check(self, name):
        p, rows = run_drill(name)
        self.assertEqual(len(rows), 1, p.stdout)
        cells = [c.strip() for c in rows[0].strip("|").split("|")]
        drill, rto, stall, failed, acked, lost, doubled, stuck = cells
        print("\n  %s: RTO %s s, stall %s s, %s failed requests, %s acknowledged"
              % (drill, rto, stall, failed, acked))
        self.assertEqual((lost, doubled, stuck), ("0", "0", "0"), p.stdout)
        self.assertEqual(p.returncode, 0, p.stdout)
        self.assertNotEqual(rto, "none", "payments never succeeded again\n" + p.stdout)
        self.assertTrue(re.fullmatch(r"[0-9.]+", rto), p.stdout)
        # the load went on through the fault: most of it was acknowledged
        self.assertGreater(int(acked), 20 * 40 // 2, p.stdout)

    def test_postgresql_primary_killed(self):
        self.check("pg-primary")

    def test_site_a_killed(self):
        self.check("site-a")


@unittest.skipUnless(harness.STORE == "postgres", "DR tests run in the PostgreSQL pass")
class ControllerTest(unittest.TestCase):
    """The controller's safety rule: it fails over only from a standby that
    was synchronous, and it fences the old primary before promoting."""

    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="payd-dr-test-")
        os.chmod(self.tmp, 0o711)
        self.dir = os.path.join(self.tmp, "t")
        env = dict(os.environ, PAYD_BIN=harness.PAYD_BIN)
        up = subprocess.run([os.path.join(DR, "up"), self.dir], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.addCleanup(shutil.rmtree, self.tmp, ignore_errors=True)
        self.addCleanup(subprocess.run, [os.path.join(DR, "down"), self.dir],
                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.assertEqual(up.returncode, 0, up.stdout)

    def state(self):
        with open(os.path.join(self.dir, "failover", "state.json")) as f:
            return json.load(f)

    def psql(self, node, sql):
        with open(os.path.join(self.dir, "pg_" + node, "port")) as f:
            port = f.read().strip()
        return subprocess.run(["psql", "-X", "-At", "-h", "127.0.0.1", "-p", port, "-U", "postgres",
                               "-d", "postgres", "-c", sql], stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True).stdout.strip()

    def kill(self, name):
        with open(os.path.join(self.dir, name, "pid")) as f:
            os.kill(int(f.read()), signal.SIGKILL)

    def log(self):
        with open(os.path.join(self.dir, "failover", "stderr.log")) as f:
            return f.read()

    def test_no_failover_from_a_standby_out_of_sync(self):
        self.assertEqual(self.state()["mode"], "sync")
        # the standby stops streaming: the primary is told to commit alone
        self.psql("site_b", "ALTER SYSTEM SET primary_conninfo = ''")
        self.psql("site_b", "SELECT pg_reload_conf()")
        wait_until(lambda: self.state()["mode"] == "alone", 20, what="mode alone")
        self.assertEqual(self.psql("site_a", "SHOW synchronous_standby_names"), "")
        self.assertEqual(self.psql("site_a", "CREATE TABLE t_alone (x int)"), "CREATE TABLE")
        # the primary dies: the standby, not in sync, is not promoted
        self.kill("pg_site_a")
        wait_until(lambda: "event=no_failover" in self.log(), 20, what="no_failover logged")
        time.sleep(2)
        self.assertEqual(self.psql("site_b", "SELECT pg_is_in_recovery()"), "t")
        self.assertNotIn("event=promoted", self.log())

    def test_failover_fences_then_promotes(self):
        self.kill("pg_site_a")
        wait_until(lambda: self.state().get("failovers") == 1, 30, what="a failover")
        self.assertEqual(self.psql("site_b", "SELECT pg_is_in_recovery()"), "f")
        self.assertEqual(self.psql("site_b", "SHOW synchronous_standby_names"), "")
        log = self.log()
        self.assertLess(log.index("event=fenced"), log.index("event=promoted"), log)
        # fenced: whatever starts the old primary again starts a standby
        data = os.path.join(self.dir, "pg_site_a", "data")
        self.assertTrue(os.path.exists(os.path.join(data, "standby.signal")))
        s = self.state()
        self.assertEqual((s["mode"], s["primary"]), ("alone", "site_b"))
        # and rebuilt, it is the synchronous standby again
        r = subprocess.run([os.path.join(DR, "rebuild"), self.dir, "site_a"],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.assertEqual(r.returncode, 0, r.stdout)
        self.assertEqual(self.state()["mode"], "sync")
        self.assertEqual(self.psql("site_a", "SELECT pg_is_in_recovery()"), "t")
        self.assertEqual(self.psql("site_b", "SHOW synchronous_standby_names"), "site_a")
        # the operator's view agrees
        payctl = os.path.join(os.path.dirname(harness.PAYD_BIN), "payctl")
        st = subprocess.run([payctl, "status", "--topology", os.path.join(self.dir, "topology.ini")],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.assertEqual(st.returncode, 0, st.stdout)
        roles = {(l.split()[0], l.split()[2]) for l in st.stdout.splitlines()[1:]
                 if l.split()[1] == "postgres"}
        self.assertEqual(roles, {("a", "standby"), ("b", "primary")}, st.stdout)

    def test_fence_stops_a_running_server_for_good(self):
        with open(os.path.join(self.dir, "pg_site_a", "pid")) as f:
            pid = int(f.read())
        r = subprocess.run([os.path.join(DR, "fence"), self.dir, "site_a"],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.assertEqual(r.returncode, 0, r.stdout)
        wait_dead(pid, "the fenced server")
        self.assertTrue(os.path.exists(os.path.join(self.dir, "pg_site_a", "data", "standby.signal")))
        with open(os.path.join(self.dir, "pg_site_a", "port")) as f:
            port = f.read().strip()
        ready = subprocess.run(["/usr/lib/postgresql/15/bin/pg_isready", "-h", "127.0.0.1",
                                "-p", port, "-t", "1"], stdout=subprocess.DEVNULL)
        self.assertEqual(ready.returncode, 2, "something still answers on site_a's port")

    def test_no_promotion_when_the_fence_fails(self):
        # the controller again, with a fence that always fails
        with open(os.path.join(self.dir, "failover", "pid")) as f:
            os.kill(int(f.read()), signal.SIGTERM)
        with open(os.path.join(self.dir, "failover", "cmd")) as f:
            cmd = f.read().splitlines()
        cmd[cmd.index("--fence") + 1] = "false"
        log_path = os.path.join(self.tmp, "failover2.log")
        with open(log_path, "w") as log:
            ctl = subprocess.Popen(cmd, stdout=log, stderr=log)
        self.addCleanup(ctl.wait)
        self.addCleanup(ctl.terminate)

        def log_text():
            with open(log_path) as f:
                return f.read()
        wait_until(lambda: "event=state_loaded" in log_text(), 10, what="the state read back")
        self.assertIn('mode="sync"', log_text())
        self.kill("pg_site_a")
        wait_until(lambda: "event=fence_failed" in log_text(), 20, what="fence_failed logged")
        time.sleep(2)
        self.assertEqual(self.psql("site_b", "SELECT pg_is_in_recovery()"), "t")
        self.assertNotIn("event=promoted", log_text())


if __name__ == "__main__":
    unittest.main()
