"""paybench's scenarios, end to end.

Each test starts a real payd (embedded; its store is PAYD_TEST_STORE's),
runs one of paybench's scenarios for a few seconds at a modest open-loop
rate with --check, and asserts: exit status 0 (3 is let pass only when the
one problem paybench saw is its own lateness: run_checked), `check: ok` as
the last line (paycheck read payd's store and the sandbox journal: nothing
lost, charged twice, stuck, refunded beyond the capture, the ledger
balanced), and the scenario's own counts in the --json file, cross-checked
against payd's store where the store can tell. create-and-pay and static are covered by
the chaos runs and the benchmarks; this module covers the others.
"""
import json
import os
import subprocess

import harness
from harness import PaydTestCase

PAYBENCH = os.path.join(os.path.dirname(os.path.abspath(harness.PAYD_BIN)), "paybench")
SLOW = 3 if harness.SLOW else 1
SECONDS = 3
RATE = 25  # sessions per second: a modest load, well below what payd takes here


def paybench_cmd(server, scenario, keys=None, extra=(), seconds=SECONDS, rate=RATE):
    """The command line of a checked run against server; --json goes to
    the server's temp dir."""
    json_path = os.path.join(server.tmp, "paybench-%s.json" % scenario)
    cmd = [PAYBENCH, "--url", "http://127.0.0.1:%d" % server.port, "--scenario", scenario,
           "--rate", str(rate), "--duration", str(seconds), "--settle-timeout", str(20 * SLOW),
           "--json", json_path, "--check", "--data-dir", server.data_dir]
    for key in keys if keys is not None else [server.key]:
        cmd += ["--key", key]
    if harness.STORE == "postgres":
        pg = harness.postgres()
        cmd += ["--store-url", pg.url(pg.database_for(server.data_dir))]
    return cmd + list(extra), json_path


class PaybenchScenariosTest(PaydTestCase):
    shared_server = False

    def run_checked(self, server, scenario, keys=None, extra=()):
        """Runs the scenario; asserts exit 0 (see below), `check: ok` last,
        and every part of paybench's verdict; returns (the JSON, the
        output)."""
        cmd, json_path = paybench_cmd(server, scenario, keys, extra)
        cp = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            timeout=120 * SLOW)
        out = cp.stdout
        lines = [line for line in out.splitlines() if line.strip()]
        self.assertTrue(lines and lines[-1].startswith("check: ok"), out)
        self.assertTrue(os.path.exists(json_path), out)
        with open(json_path) as f:
            result = json.load(f)
        # paybench's verdict also holds its own punctuality: in open loop a
        # session started more than 10 ms late (1 in 75 here) makes it exit
        # 3. That is the client's machine, not payd (a sanitizer build on
        # two shared cores does it now and then), so a run whose only
        # problem is the schedule passes; every other part of the verdict is
        # asserted one by one below.
        schedule_kept = result["schedule"]["kept"]
        if schedule_kept:
            self.assertEqual(cp.returncode, 0, out)
            self.assertTrue(result["ok"], out)
        else:
            self.assertIn(cp.returncode, (0, 3), out)
        self.assertEqual(result["scenario"], scenario, out)
        self.assertTrue(result["scenario_ok"], out)
        self.assertEqual((result["sessions_failed"], result["sessions_aborted"]), (0, 0), out)
        self.assertGreaterEqual(result["sessions_started"], RATE * SECONDS, out)
        self.assertEqual(result["sessions_ok"], result["sessions_started"], out)
        pay = result["payments"]
        self.assertTrue(pay["all_final"], out)
        self.assertEqual((pay["not_final"], pay["not_processing_on_accept"]), (0, 0), out)
        self.assertEqual(pay["succeeded"] + pay["failed"], pay["accepted"], out)
        if scenario != "mix":
            self.assertEqual(pay["failed"], 0, out)
            self.assertEqual(pay["sample_succeeded"], pay["sample_size"], out)
            self.assertGreater(pay["sample_size"], 0, out)
        return result, out

    def run_orders(self, server, result):
        """(order id, merchant id) of every order this run created (its
        merchant_order_no is pb-RUN-N)."""
        return server.db("SELECT id, merchant_id FROM orders WHERE merchant_order_no LIKE ?",
                         ("pb-%s-%%" % result["run_id"],))

    def payments_of_run(self, server, result, columns="p.id"):
        return server.db("SELECT %s FROM payments p JOIN orders o ON o.id = p.order_id"
                         " WHERE o.merchant_order_no LIKE ?" % columns,
                         ("pb-%s-%%" % result["run_id"],))

    def test_many_merchants(self):
        s = self.start_server()
        keys = [s.key, s.add_merchant("pb-m1"), s.add_merchant("pb-m2")]
        keys_file = os.path.join(s.tmp, "keys.txt")
        with open(keys_file, "w") as f:
            f.write("# the other merchants\n\n%s\n  %s  \n" % (keys[1], keys[2]))
        result, out = self.run_checked(s, "many-merchants", keys=keys[:1],
                                       extra=["--keys", keys_file])
        m = result["merchants"]
        self.assertEqual(m["count"], 3, out)
        sessions = [x["sessions"] for x in m["per_merchant"]]
        accepted = [x["accepted"] for x in m["per_merchant"]]
        self.assertLessEqual(max(sessions) - min(sessions), 1, out)  # round robin
        self.assertEqual(sum(accepted), result["payments"]["accepted"], out)
        self.assertGreater(min(accepted), 0, out)
        # payd's store agrees: the run's payments belong to three merchants,
        # as many each as paybench was answered 202 for.
        per_merchant = {}
        for (_, merchant) in self.payments_of_run(s, result, "p.id, p.merchant_id"):
            per_merchant[merchant] = per_merchant.get(merchant, 0) + 1
        self.assertEqual(sorted(per_merchant.values()), sorted(accepted), out)
        # Isolation: every sampled payment, read with another merchant's key, is 404.
        cross = m["cross_reads"]
        self.assertEqual(cross["reads"], result["payments"]["sample_size"], out)
        self.assertGreater(cross["reads"], 0, out)
        self.assertEqual((cross["hidden_404"], cross["visible"], cross["other"]),
                         (cross["reads"], 0, 0), out)

    def test_retry(self):
        s = self.start_server()
        result, out = self.run_checked(s, "retry", extra=["--retries", "3"])
        r = result["retry"]
        sessions = result["sessions_started"]
        self.assertEqual(r["retries_per_payment"], 3)
        self.assertEqual(r["sent"], 3 * sessions, out)
        self.assertEqual(r["answered"], r["sent"], out)
        self.assertEqual((r["id_mismatch"], r["body_differs"], r["replay_marks_wrong"],
                          r["unexpected"], r["shed"]), (0, 0, 0, 0, 0), out)
        # Every retry is either replayed or met the first in flight (allowed).
        self.assertEqual(set(r["not_replayed"]) - {"409 idempotency_key_in_use"}, set(), out)
        self.assertEqual(r["replayed"] + sum(r["not_replayed"].values()), r["answered"], out)
        # The retries after the first answered are replays: at least one a session.
        self.assertGreaterEqual(r["replayed"], sessions, out)
        self.assertEqual(result["requests"]["payment_retry"]["status"].get("202"), r["replayed"])
        self.assertEqual(r["orders_listed"], sessions, out)
        self.assertEqual(r["orders_not_one_payment"], 0, out)
        # One key, one payment: the store has exactly one per order of the run.
        orders = self.run_orders(s, result)
        payments = self.payments_of_run(s, result)
        self.assertEqual(len(orders), sessions, out)
        self.assertEqual(len(payments), len(orders), out)
        self.assertEqual(result["payments"]["accepted"], sessions, out)

    def test_race(self):
        s = self.start_server()
        result, out = self.run_checked(s, "race", extra=["--racers", "3"])
        r = result["race"]
        orders = result["sessions_started"]
        self.assertEqual(r["orders"], orders, out)
        self.assertEqual((r["exactly_one_accepted"], r["several_accepted"], r["none_accepted"]),
                         (orders, 0, 0), out)
        self.assertEqual(r["losers"], 2 * orders, out)
        self.assertEqual((r["unexpected_losers"], r["shed_losers"]), (0, 0), out)
        # The losers were refused because the order was taken.
        self.assertGreater(r["loser_answers"].get("409 payment_in_progress", 0), 0, out)
        self.assertEqual(set(r["loser_answers"]) - {"409 payment_in_progress",
                                                    "409 order_already_paid"}, set(), out)
        self.assertEqual(result["requests"]["payment_accept"]["status"],
                         {"202": orders, "409": 2 * orders}, out)
        # A refused racer writes nothing: one payment an order, succeeded.
        rows = self.payments_of_run(s, result, "p.order_id, p.status")
        self.assertEqual(len(rows), orders, out)
        self.assertEqual(len({order for order, _ in rows}), orders, out)
        self.assertEqual({st for _, st in rows}, {"succeeded"}, out)

    def test_mix(self):
        s = self.start_server()
        mix = {"ok": 60, "declined": 25, "error": 15}
        result, out = self.run_checked(s, "mix", extra=[
            "--mix", ",".join("%s=%d" % kv for kv in mix.items())])
        m = result["mix"]
        sessions = result["sessions_started"]
        self.assertEqual(m["unexpected"], 0, out)
        self.assertEqual(m["read_back"], result["payments"]["accepted"], out)
        self.assertEqual(m["read_back_final"], m["read_back"], out)
        want = {"ok": "succeeded", "declined": "failed card_declined",
                "error": "failed channel_error"}
        for method, weight in mix.items():
            got = m["methods"][method]
            # Spread by the weights: within one of the exact share.
            self.assertLessEqual(abs(got["sessions"] * 100 - sessions * weight), 100, out)
            self.assertGreater(got["accepted"], 0, out)
            self.assertEqual(got["expected"], want[method])
            self.assertEqual(got["outcomes"], {want[method]: got["accepted"]}, out)
        pay = result["payments"]
        self.assertEqual(pay["succeeded"], m["methods"]["ok"]["accepted"], out)
        self.assertEqual(pay["failed"], m["methods"]["declined"]["accepted"] +
                         m["methods"]["error"]["accepted"], out)
        # payd's store agrees, method by method.
        stored = {}
        for method, status, code in self.payments_of_run(s, result,
                                                         "p.method, p.status, p.failure_code"):
            label = status if status != "failed" else "failed %s" % code
            stored[(method, label)] = stored.get((method, label), 0) + 1
        self.assertEqual(stored, {(method, want[method]): m["methods"][method]["accepted"]
                                  for method in mix}, out)

    def test_refunds(self):
        s = self.start_server()
        result, out = self.run_checked(s, "refunds", extra=["--refund-share", "50",
                                                            "--amount", "1000"])
        r = result["refunds"]
        accepted = result["payments"]["accepted"]
        self.assertEqual(r["payments_chosen"], accepted // 2, out)
        self.assertEqual(r["payments_refunded"], r["payments_chosen"], out)
        self.assertEqual((r["over_accepted"], r["wrongly_refused"], r["unexpected"], r["shed"],
                          r["poll_errors"], r["skipped_not_final"]), (0, 0, 0, 0, 0, 0), out)
        plans = r["plans"]
        self.assertEqual(r["requests"], plans[0] + 2 * plans[1] + plans[2] + 2 * plans[3], out)
        # Plan 3 asks twice for half plus one: exactly one of each pair is refused.
        self.assertGreater(plans[3], 0, out)
        self.assertEqual(r["refused_exceeds_refundable"], plans[3], out)
        self.assertEqual(r["accepted"], r["requests"] - plans[3], out)
        self.assertEqual(r["accepted_minor"], plans[0] * 250 + plans[1] * 700 + plans[2] * 500 +
                         plans[3] * 501, out)
        self.assertTrue(r["all_final"], out)
        self.assertEqual((r["succeeded"], r["failed"], r["not_final"]), (r["accepted"], 0, 0), out)
        self.assertGreater(result["requests"]["refund_create"]["latency_ok"]["count"], 0, out)
        # payd's store agrees: the refunds succeeded, no payment is refunded
        # beyond its 1000, and the amounts add up to what paybench was accepted.
        rows = s.db("SELECT r.payment_id, r.amount, r.status FROM refunds r"
                    " JOIN orders o ON o.id = r.order_id WHERE o.merchant_order_no LIKE ?",
                    ("pb-%s-%%" % result["run_id"],))
        self.assertEqual(len(rows), r["accepted"], out)
        self.assertEqual({st for _, _, st in rows}, {"succeeded"}, out)
        per_payment = {}
        for pid, amount, _ in rows:
            per_payment[pid] = per_payment.get(pid, 0) + amount
        self.assertLessEqual(max(per_payment.values()), 1000, out)
        self.assertEqual(sum(per_payment.values()), r["accepted_minor"], out)

    def test_usage_errors(self):
        """Scenarios refuse what they cannot do, with status 2, before any load."""
        url = ["--url", "http://127.0.0.1:9"]
        for args in (["--scenario", "many-merchants", "--key", "sk_one"],
                     ["--scenario", "create-and-pay", "--key", "sk_a", "--key", "sk_b"],
                     ["--scenario", "create-and-pay", "--key", "sk_a", "--racers", "3"],
                     ["--scenario", "race", "--key", "sk_a", "--racers", "1"],
                     ["--scenario", "mix", "--key", "sk_a", "--mix", "ok=0"],
                     ["--scenario", "mix", "--key", "sk_a", "--method", "ok"],
                     ["--scenario", "refunds", "--key", "sk_a", "--amount", "3"],
                     ["--scenario", "static", "--check", "--data-dir", "/tmp"]):
            cp = subprocess.run([PAYBENCH] + url + args, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, timeout=30)
            self.assertEqual(cp.returncode, 2, (args, cp.stdout, cp.stderr))
            self.assertTrue(cp.stderr.startswith("paybench:") or "usage:" in cp.stderr,
                            (args, cp.stderr))


if __name__ == "__main__":
    import unittest
    unittest.main()
