"""Money under every fault paysim injects, with concurrent load.

For each fault (system errors, lost answers, held answers, resets, latency,
an outage, declines), payments and refunds run concurrently through the
http channel while the fault holds; then the fault is cleared and the system
settles. Checked independently of payd's own accounts, from paysim's
journal (the external witness):

- every accepted payment and refund is final;
- paysim's succeeded charges are payd's succeeded payments, one for one;
- paysim's refunds are payd's succeeded refunds, one for one, and never
  above the charge;
- the ledger balances, and the merchant's balance is what was charged
  minus what was refunded;
- `payctl reconcile` of the day is clean.
"""
import concurrent.futures
import os
import subprocess
import time

import harness
from harness import PaydTestCase, wait_until
from paysim import SECRET, Paysim
from test_reconcile import PAYCTL_BIN
from test_refunds import refund

FAULTS = [
    ("errors", {"error_rate": 0.4}),
    ("lost answers", {"lost_answer_rate": 0.4}),
    ("held answers", {"hang_rate": 0.3}),
    ("resets", {"reset_rate": 0.4}),
    ("latency", {"latency_ms": {"dist": "exponential", "mean_ms": 150, "max_ms": 900}}),
    ("outage", {"outage": True}),
    ("declines", {"decline_rate": 0.5}),
]
PAYMENTS_PER_FAULT = 8


class MoneyUnderFaultsTest(PaydTestCase):
    shared_server = False
    ENV = {"PAYD_BREAKER_MIN_CALLS": "1000000", "PAYD_WORKER_RETRY_BASE_MS": "50",
           "PAYD_WORKER_RETRY_MAX_MS": "400", "PAYD_WORKER_MAX_ATTEMPTS": "6"}

    def test_every_fault(self):
        port = harness.free_port()
        paysim = Paysim(notify_delays="0.2,0.5,1,2,2,2")
        self.addCleanup(paysim.cleanup)
        paysim.start()
        config = ("[channel.psp]\ntype = http\nurl = http://127.0.0.1:%d\nsecret = %s\n"
                  "timeout_ms = 500\nnotify_url = http://127.0.0.1:%d/v1/notify/psp\n"
                  % (paysim.port, SECRET, port))
        config_path = os.path.join(paysim.tmp, "payd.ini")
        with open(config_path, "w") as f:
            f.write(config)
        s = self.start_server(config=config, env=self.ENV, fast=False, start=False)
        s.start(port=port)

        def pay_one(i):
            order = s.create_order(amount=1000 + i)
            r = s.pay(order["id"], "ok", channel="psp")
            self.assertEqual(r.status, 202, r)
            return r.body

        def refund_some(p):
            """Two refunds racing: 600 and 500 of about 1000; at most one fits."""
            out = []
            for amount in (600, 500):
                r = refund(s, p["id"], amount)
                self.assertIn(r.status, (202, 400), r)
                if r.status == 202:
                    out.append(r.body)
            return out

        payments, refunds = [], []
        pool = concurrent.futures.ThreadPoolExecutor(8)
        settled = []  # succeeded payments from the previous round, refunded under this fault
        for n, (name, fault) in enumerate(FAULTS):
            paysim.set_faults(dict(fault, seed=n))
            batch = list(pool.map(pay_one, range(n * 100, n * 100 + PAYMENTS_PER_FAULT)))
            payments += batch
            for got in pool.map(refund_some, settled):
                refunds += got
            time.sleep(1.0)
            paysim.set_faults({})
            settled = []
            for p in batch:
                final = s.wait_payment_final(p["id"])
                if final["status"] == "succeeded":
                    settled.append(final)
        for got in pool.map(refund_some, settled):
            refunds += got
        pool.shutdown()

        # Everything final.
        final = {p["id"]: s.wait_payment_final(p["id"]) for p in payments}

        def refund_final(rid):
            r = s.request("GET", "/v1/refunds/" + rid).body
            return r if r["status"] in ("succeeded", "failed") else None
        final_refunds = {rf["id"]: wait_until(lambda rid=rf["id"]: refund_final(rid),
                                              what="refund final") for rf in refunds}
        succeeded = {p["serial_no"]: p for p in final.values() if p["status"] == "succeeded"}
        self.assertGreater(len(succeeded), len(payments) // 3)
        self.assertTrue(any(p["status"] == "failed" for p in final.values()))  # the declines
        self.assertGreater(len(final_refunds), 5)

        journal = paysim.journal()
        charged = {c["out_trade_no"]: c for c in journal["charges"] if c["status"] == "succeeded"}
        mine = {p["serial_no"] for p in payments}
        self.assertEqual(set(charged) & mine, set(succeeded))
        self.assertEqual(len([c for c in journal["charges"] if c["out_trade_no"] in mine]),
                         len({c["out_trade_no"] for c in journal["charges"]
                              if c["out_trade_no"] in mine}))  # one row per number
        for serial, p in succeeded.items():
            self.assertEqual(charged[serial]["amount"], p["amount"])

        ok_refunds = {r["refund_no"]: r for r in final_refunds.values()
                      if r["status"] == "succeeded"}
        at_paysim = {r["out_refund_no"]: r for r in journal["refunds"]}
        self.assertEqual(set(at_paysim), set(ok_refunds))
        by_trade = {}
        for r in journal["refunds"]:
            by_trade[r["out_trade_no"]] = by_trade.get(r["out_trade_no"], 0) + r["amount"]
        for serial, total in by_trade.items():
            self.assertLessEqual(total, charged[serial]["amount"])

        self.assertEqual(s.db_scalar("SELECT coalesce(sum(amount), 0) FROM ledger_entries"), 0)
        balance = {b["currency"]: b["amount"]
                   for b in s.request("GET", "/v1/balance").body["data"]}
        self.assertEqual(balance.get("CNY", 0),
                         sum(p["amount"] for p in succeeded.values())
                         - sum(r["amount"] for r in ok_refunds.values()))

        env = harness.store_env(s.data_dir)
        cp = subprocess.run([PAYCTL_BIN, "reconcile", "--date",
                             time.strftime("%Y-%m-%d", time.gmtime()), "--channel", "psp",
                             "--config", config_path, "--data-dir", s.data_dir],
                            env=harness.child_env(env), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, timeout=120)
        self.assertEqual(cp.returncode, 0, cp.stdout + cp.stderr)


if __name__ == "__main__":
    import unittest
    unittest.main()
