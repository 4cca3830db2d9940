"""payctl reconcile --date D: the channel's statement against payd's records.

- sandbox: after payments and refunds, the day reconciles clean (exit 0)
  and the report is recorded; then each kind of difference is made on
  purpose and found: a charge only the channel has (missing_at_payd), a
  success only payd has (missing_at_channel), an amount that differs
  (amount_mismatch); exit 1;
- paysim (the http channel): payments and refunds under lost answers
  reconcile clean; a charge payd still holds as processing (its answers and
  queries never came back) is a status_mismatch; a charge made at paysim
  behind payd's back is missing_at_payd;
- a bad date or an unknown channel is a usage error (exit 2), changing
  nothing.
"""
import json
import os
import subprocess
import time

import harness
from harness import PaydTestCase, wait_until
from paysim import SECRET, Paysim
from test_refunds import paid_order, refund, wait_refund_final

PAYCTL_BIN = os.path.join(os.path.dirname(os.path.abspath(harness.PAYD_BIN)), "payctl")


def payctl(server, *args, config=None):
    cmd = [PAYCTL_BIN] + list(args) + ["--data-dir", server.data_dir]
    if config:
        cmd += ["--config", config]
    env = harness.store_env(server.data_dir)
    env.update({k: v for k, v in server.env.items() if k.startswith("PAYD_CHANNEL")})
    return subprocess.run(cmd, env=harness.child_env(env), stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True, timeout=120)


def today():
    return time.strftime("%Y-%m-%d", time.gmtime())


def differences(cp):
    return [json.loads(line.split("DIFFERENCE ", 1)[1])
            for line in cp.stdout.splitlines() if "DIFFERENCE " in line]


class ReconcileSandboxTest(PaydTestCase):
    shared_server = False

    def test_clean_then_each_difference(self):
        s = self.start_server()
        pays = [paid_order(s, 1000 + i)[1] for i in range(3)]
        rf = self.assertStatus(refund(s, pays[0]["id"], 400), 202)
        wait_refund_final(s, rf["id"])

        cp = payctl(s, "reconcile", "--date", today())
        self.assertEqual(cp.returncode, 0, cp.stdout + cp.stderr)
        self.assertIn("clean: 0 differences", cp.stdout)
        reports = s.db_rows("SELECT channel, differences, report FROM reconciliations")[0]
        self.assertEqual([(r[0], r[1]) for r in reports], [("sandbox", 0)])
        report = json.loads(reports[0][2])
        self.assertEqual((report["channel_charges"], report["payd_charges"]), (3, 3))
        self.assertEqual((report["channel_refunds"], report["payd_refunds"]), (1, 1))

        # The channel charged something payd never asked for.
        now_ms = int(time.time() * 1000)
        harness.db_exec_file(s.sandbox_path, "INSERT INTO charges VALUES (?,?,?,?,?,?,?)",
                             ("99999999999999999999", 700, "CNY", "ok", "succeeded", "sbx_out",
                              now_ms))
        # payd holds a success the channel has no line for.
        harness.db_exec_file(s.sandbox_path, "DELETE FROM charges WHERE serial_no = ?",
                             (pays[1]["serial_no"],))
        # And an amount that differs.
        s.db_exec("UPDATE payments SET amount = 1 WHERE id = ?", (pays[2]["id"],))

        cp = payctl(s, "reconcile", "--date", today())
        self.assertEqual(cp.returncode, 1, cp.stdout + cp.stderr)
        got = sorted((d["kind"], d["number"]) for d in differences(cp))
        self.assertEqual(got, sorted([("missing_at_payd", "99999999999999999999"),
                                      ("missing_at_channel", pays[1]["serial_no"]),
                                      ("amount_mismatch", pays[2]["serial_no"])]))
        self.assertEqual(s.db_scalar("SELECT count(*) FROM reconciliations"), 2)

    def test_usage_errors_change_nothing(self):
        s = self.start_server()
        paid_order(s)
        for args in (["reconcile"], ["reconcile", "--date", "2026-02-30"],
                     ["reconcile", "--date", "yesterday"],
                     ["reconcile", "--date", today(), "--channel", "nope"], ["frobnicate"]):
            cp = payctl(s, *args)
            self.assertEqual(cp.returncode, 2, (args, cp.stdout, cp.stderr))
        self.assertEqual(s.db_scalar("SELECT count(*) FROM reconciliations"), 0)


class ReconcilePaysimTest(PaydTestCase):
    shared_server = False
    ENV = {"PAYD_BREAKER_MIN_CALLS": "1000000", "PAYD_WORKER_RETRY_BASE_MS": "50",
           "PAYD_WORKER_RETRY_MAX_MS": "300"}

    def setUp(self):
        super().setUp()
        self.paysim = Paysim()
        self.addCleanup(self.paysim.cleanup)
        self.paysim.start()
        self.config = os.path.join(self.paysim.tmp, "payd.ini")
        with open(self.config, "w") as f:
            f.write("[channel.psp]\ntype = http\nurl = http://127.0.0.1:%d\nsecret = %s\n"
                    "timeout_ms = 400\n" % (self.paysim.port, SECRET))
        with open(self.config) as f:
            self.s = self.start_server(config=f.read(), env=self.ENV, fast=False)

    def pay(self, amount=1000):
        order = self.s.create_order(amount=amount)
        r = self.s.pay(order["id"], "ok", channel="psp")
        self.assertEqual(r.status, 202, r)
        return r.body

    def test_clean_under_faults_then_differences(self):
        s = self.s
        self.paysim.set_faults({"lost_answer_rate": 0.5, "seed": 3})
        pays = [self.pay(1000 + i) for i in range(8)]
        for p in pays:
            self.assertEqual(s.wait_payment_final(p["id"])["status"], "succeeded")
        rfs = [self.assertStatus(refund(s, p["id"], 100), 202) for p in pays[:4]]
        for rf in rfs:
            self.assertEqual(wait_refund_final(s, rf["id"])["status"], "succeeded")
        self.paysim.set_faults({})
        cp = payctl(s, "reconcile", "--date", today(), "--channel", "psp", config=self.config)
        self.assertEqual(cp.returncode, 0, cp.stdout + cp.stderr)
        self.assertIn("clean: 0 differences", cp.stdout)

        # A charge made at paysim behind payd's back.
        r = self.paysim.charge("OUTSIDE-1", amount=42)
        self.assertEqual(r.status, 200, r)
        # A charge whose answers and queries never come back: paysim charged
        # it, payd still holds it processing.
        self.paysim.set_faults({"scope": ["charge", "query"], "hang_rate": 1})
        stuck = self.pay(555)
        wait_until(lambda: self.paysim.charges_of(stuck["serial_no"]), what="the charge")
        cp = payctl(s, "reconcile", "--date", today(), "--channel", "psp", config=self.config)
        self.assertEqual(cp.returncode, 1, cp.stdout + cp.stderr)
        got = sorted((d["kind"], d["number"]) for d in differences(cp))
        self.assertEqual(got, sorted([("status_mismatch", stuck["serial_no"]),
                                      ("missing_at_payd", "OUTSIDE-1")]))
        self.paysim.set_faults({})


if __name__ == "__main__":
    import unittest
    unittest.main()
