"""paycheck, the independent checker, can fail: after a clean run it says
ok, and each kind of damage made on purpose (to payd's store or to the
channel's journal) is counted under its own name, with exit status 1."""
import os
import subprocess
import threading
import time

import harness
from harness import PaydTestCase
from test_refunds import paid_order, refund, wait_refund_final

PAYCHECK = os.path.join(os.path.dirname(os.path.abspath(harness.PAYD_BIN)), "paycheck")


def paycheck(s, acked=None, extra=()):
    cmd = [PAYCHECK, "--data-dir", s.data_dir] + list(extra)
    if harness.STORE == "postgres":
        pg = harness.postgres()
        cmd += ["--store-url", pg.url(pg.database_for(s.data_dir))]
    if acked is not None:
        path = os.path.join(s.tmp, "acked.txt")
        with open(path, "w") as f:
            f.write("\n".join(acked) + "\n")
        cmd += ["--acked", path]
    cp = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                        timeout=60)
    last = cp.stdout.strip().splitlines()[-1] if cp.stdout.strip() else ""
    counts = dict(kv.split("=") for kv in last.split()[2:]) if last.startswith("check:") else {}
    return cp, last, {k: int(v) for k, v in counts.items()}


class PaycheckTest(PaydTestCase):
    shared_server = False

    def test_ok_then_each_damage(self):
        s = self.start_server()
        pays = [paid_order(s, 1000)[1] for _ in range(4)]
        rf = self.assertStatus(refund(s, pays[0]["id"], 300), 202)
        wait_refund_final(s, rf["id"])
        cp, last, counts = paycheck(s, acked=[p["id"] for p in pays])
        self.assertEqual(cp.returncode, 0, cp.stdout + cp.stderr)
        self.assertTrue(last.startswith("check: ok"), last)

        # lost: an acknowledged id payd does not have.
        cp, last, counts = paycheck(s, acked=[p["id"] for p in pays] + ["pay_never_stored"])
        self.assertEqual((cp.returncode, counts["lost"]), (1, 1), cp.stdout)
        self.assertTrue(last.startswith("check: FAILED"), last)
        # stuck: a payment left processing.
        s.db_exec("UPDATE payments SET status = 'processing' WHERE id = ?", (pays[1]["id"],))
        # extra: a charge at the channel that payd never asked for.
        harness.db_exec_file(s.sandbox_path, "INSERT INTO charges VALUES (?,?,?,?,?,?,?)",
                             ("77777777777777777777", 1000, "CNY", "ok", "succeeded", "sbx_x", 0))
        # unbalanced: an entry without its other leg.
        s.db_exec("INSERT INTO ledger_entries VALUES ('t-x', 'merchant:zz', 5, 'CNY', 0)")
        # overrefund at the channel.
        harness.db_exec_file(s.sandbox_path, "INSERT INTO refunds VALUES (?,?,?,?,?)",
                             ("R-outside", pays[3]["serial_no"], 1001, "sbr_x", 0))
        cp, last, counts = paycheck(s)
        self.assertEqual(cp.returncode, 1, cp.stdout)
        self.assertGreaterEqual(counts["stuck"], 1, cp.stdout)
        self.assertGreaterEqual(counts["extra"], 2, cp.stdout)  # the charge, the refund
        self.assertGreaterEqual(counts["unbalanced"], 1, cp.stdout)
        self.assertGreaterEqual(counts["overrefund"], 1, cp.stdout)
        self.assertEqual(counts["double"], 0, cp.stdout)

    def test_double_charge_is_seen(self):
        s = self.start_server()
        order, p = paid_order(s, 1000)
        # A second payment of the same order, charged at the channel: what
        # payd exists to prevent, made by hand on both sides.
        s.db_exec("INSERT INTO payments (id, order_id, merchant_id, amount, currency, channel,"
                  " method, status, serial_no, created_ms, updated_ms) SELECT 'pay_dup',"
                  " order_id, merchant_id, amount, currency, channel, method, 'failed',"
                  " '88888888888888888888', created_ms, updated_ms FROM payments WHERE id = ?",
                  (p["id"],))
        harness.db_exec_file(s.sandbox_path, "INSERT INTO charges VALUES (?,?,?,?,?,?,?)",
                             ("88888888888888888888", 1000, "CNY", "ok", "succeeded", "sbx_y", 0))
        cp, last, counts = paycheck(s)
        self.assertEqual(cp.returncode, 1, cp.stdout)
        self.assertGreaterEqual(counts["double"], 1, cp.stdout)

    def test_unreadable_input(self):
        cp = subprocess.run([PAYCHECK, "--data-dir", "/nonexistent-payd-dir"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.assertEqual(cp.returncode, 2, cp.stdout + cp.stderr)


    def test_settle_waits_for_processing_to_end(self):
        s = self.start_server()
        order, p = paid_order(s, 1000)
        s.db_exec("UPDATE payments SET status = 'processing' WHERE id = ?", (p["id"],))
        started = time.monotonic()
        cp, last, counts = paycheck(s, extra=["--settle", "1"])
        self.assertGreaterEqual(time.monotonic() - started, 1.0)  # waited, then reported it
        self.assertEqual((cp.returncode, counts["stuck"]), (1, 1), cp.stdout)
        # Final again while paycheck waits: ok.
        t = threading.Timer(0.5, s.db_exec, ("UPDATE payments SET status = 'succeeded'"
                                             " WHERE id = ?", (p["id"],)))
        t.start()
        cp, last, counts = paycheck(s, extra=["--settle", "30"])
        t.join()
        self.assertEqual(cp.returncode, 0, cp.stdout + cp.stderr)
        self.assertTrue(last.startswith("check: ok"), last)


if __name__ == "__main__":
    import unittest
    unittest.main()
