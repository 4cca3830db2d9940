"""payd's http channel against paysim, both real processes.

- an ok payment succeeds with paysim's trade number; a declined one fails
  card_declined; each is exactly one charge in paysim's journal, under the
  payment's serial number;
- system errors (error_rate) are retried and end in one charge;
- answers that never come (hang) or are lost after the charge
  (lost_answer), and resets, are unknown outcomes: resolved by query, never
  by a second charge;
- a wrong secret is refused by paysim: nothing charged, and the payment,
  whose outcome no query can tell, stays processing and is escalated as a
  dead letter (with its alert);
- many payments under mixed faults: every one final, paysim's journal of
  charges equal to payd's succeeded payments one for one;
- the configuration is refused without url or secret, and the secret never
  appears in payd's log.
"""
import subprocess
import threading
import time
import unittest

import harness
from harness import START_DEADLINE_S, PaydTestCase, wait_until
from paysim import SECRET, Paysim


def channel_config(paysim, secret=SECRET, timeout_ms=1000):
    return ("[channel.psp]\ntype = http\nurl = http://127.0.0.1:%d\nsecret = %s\n"
            "timeout_ms = %d\n" % (paysim.port, secret, timeout_ms))


def channel_calls(s, outcome):
    """payd_channel_calls_total{channel="psp",outcome=...}."""
    return harness.gauge(s, "payd_channel_calls_total", channel="psp", outcome=outcome) or 0


class HttpChannelTest(PaydTestCase):
    shared_server = False
    # The breaker is tested elsewhere; here every retry must reach paysim.
    ENV = {"PAYD_BREAKER_MIN_CALLS": "1000000", "PAYD_WORKER_MAX_ATTEMPTS": "3",
           "PAYD_WORKER_RETRY_BASE_MS": "50"}

    def setUp(self):
        super().setUp()
        self.paysim = Paysim()
        self.addCleanup(self.paysim.cleanup)
        self.paysim.start()

    def payd(self, secret=SECRET, timeout_ms=1000, env=None):
        e = dict(self.ENV)
        e.update(env or {})
        # fast=False: the harness's fast settings name the sandbox channel,
        # which this configuration does not have.
        return self.start_server(config=channel_config(self.paysim, secret, timeout_ms), env=e,
                                 fast=False)

    def pay(self, s, method="ok"):
        order = s.create_order(amount=1234)
        r = s.pay(order["id"], method=method, channel="psp")
        self.assertEqual(r.status, 202, r)
        return r.body

    def charges(self, serial_no):
        return self.paysim.charges_of(serial_no)

    def assertOneCharge(self, payment, status):
        charges = self.charges(payment["serial_no"])
        self.assertEqual(len(charges), 1, charges)
        self.assertEqual((charges[0]["status"], charges[0]["amount"]), (status, 1234))
        return charges[0]

    def test_ok_and_declined(self):
        s = self.payd()
        p = s.wait_payment_final(self.pay(s)["id"])
        self.assertEqual(p["status"], "succeeded", p)
        charge = self.assertOneCharge(p, "succeeded")
        self.assertEqual(p["channel_txn_id"], charge["trade_no"])
        d = s.wait_payment_final(self.pay(s, "declined")["id"])
        self.assertEqual((d["status"], d["failure"]["code"]), ("failed", "card_declined"), d)
        self.assertOneCharge(d, "declined")
        # The catalogue shows the channel and its methods.
        r = s.request("GET", "/v1/channels")
        psp = [c for c in r.body["data"] if c["id"] == "psp"]
        self.assertEqual(psp[0]["methods"], ["ok", "declined"], r.body)

    def fault_then_clear(self, faults, outcome, settle_s=1.5):
        """A payment made while faults hold, then the faults cleared: its
        first attempts meet the fault (seen as `outcome` in payd's metrics),
        and it ends succeeded with exactly one charge."""
        s = self.payd()
        self.paysim.set_faults(faults)
        p = self.pay(s)
        time.sleep(settle_s)
        self.assertGreater(channel_calls(s, outcome), 0)
        self.paysim.set_faults({})
        p = s.wait_payment_final(p["id"])
        self.assertEqual(p["status"], "succeeded", p)
        self.assertOneCharge(p, "succeeded")

    def test_system_errors_are_retried(self):
        self.fault_then_clear({"error_rate": 1}, "error")

    def test_hang_is_resolved_by_query(self):
        s = self.payd(timeout_ms=500)
        self.paysim.set_faults({"scope": ["charge"], "hang_rate": 1})
        p = self.pay(s)
        # The charge happened though no answer came: the worker finds it by
        # query and never charges again.
        p = s.wait_payment_final(p["id"])
        self.assertEqual(p["status"], "succeeded", p)
        self.assertOneCharge(p, "succeeded")
        self.assertGreater(channel_calls(s, "unknown"), 0)

    def test_lost_answer_is_resolved_by_query(self):
        s = self.payd()
        self.paysim.set_faults({"scope": ["charge"], "lost_answer_rate": 1})
        p = s.wait_payment_final(self.pay(s)["id"])
        self.assertEqual(p["status"], "succeeded", p)
        self.assertOneCharge(p, "succeeded")

    def test_resets_then_recovery(self):
        self.fault_then_clear({"reset_rate": 1}, "unknown")

    def test_outage_then_recovery(self):
        self.fault_then_clear({"outage": True}, "unknown")

    def test_wrong_secret_charges_nothing_and_is_escalated(self):
        # paysim refuses every request (401): the first charge did nothing,
        # but a refused query says nothing about a charge, so the payment is
        # not failed: it stays processing and, past [worker] max_attempts
        # deliveries, is counted a dead letter (the PaydDeadLetters alert).
        s = self.payd(secret="not-" + SECRET)
        p = self.pay(s)

        wait_until(lambda: (harness.gauge(s, "payd_dead_letters") or 0) >= 1,
                   what="a dead letter")
        self.assertEqual(s.request("GET", "/v1/payments/" + p["id"]).body["status"],
                         "processing")
        self.assertEqual(self.charges(p["serial_no"]), [])
        self.assertGreater(channel_calls(s, "error"), 0)
        wait_until(lambda: "PaydDeadLetters" in s.stderr_text(), what="the alert")

    def test_configured_methods(self):
        # The PSP's methods come from the configuration; payd passes them on
        # and refuses any other.
        config = channel_config(self.paysim) + "methods = ok,declined,wallet_qr\n"
        s = self.start_server(config=config, env=self.ENV, fast=False)
        psp = [c for c in s.request("GET", "/v1/channels").body["data"] if c["id"] == "psp"]
        self.assertEqual(psp[0]["methods"], ["ok", "declined", "wallet_qr"])
        order = s.create_order(amount=1234)
        self.assertError(s.pay(order["id"], method="card", channel="psp"), 400,
                         "invalid_request_error", "method_invalid", "method")
        p = s.wait_payment_final(s.pay(order["id"], method="declined", channel="psp").body["id"])
        self.assertEqual(p["failure"]["code"], "card_declined")

    def test_many_payments_under_mixed_faults(self):
        s = self.payd(timeout_ms=500)
        self.paysim.set_faults({"scope": ["charge", "query"], "error_rate": 0.15,
                                "hang_rate": 0.1, "lost_answer_rate": 0.15,
                                "reset_rate": 0.1, "seed": 42})
        n = 30 if not harness.SLOW else 15
        ids, errors = [], []

        def client(k):
            try:
                for _ in range(k):
                    ids.append(self.pay(s)["id"])
            except Exception as e:  # reported below
                errors.append(e)
        threads = [threading.Thread(target=client, args=(n // 3,)) for _ in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        self.assertEqual(errors, [])
        # The faults struck: errors and unknown outcomes both.
        wait_until(lambda: channel_calls(s, "error") > 0 and channel_calls(s, "unknown") > 0,
                   what="faults to strike")
        # Faults off once every payment was accepted: the retries settle.
        self.paysim.set_faults({})
        final = [s.wait_payment_final(i) for i in ids]
        journal = self.paysim.journal()
        succeeded_serials = sorted(p["serial_no"] for p in final if p["status"] == "succeeded")
        charged = sorted(c["out_trade_no"] for c in journal["charges"]
                         if c["status"] == "succeeded")
        # One for one: none missing, none extra, none doubled.
        self.assertEqual(charged, succeeded_serials)
        for p in final:
            if p["status"] == "failed":
                self.assertEqual(p["failure"]["code"], "channel_error", p)
        self.assertNotIn(SECRET, open(s.stderr_path).read())


class HttpChannelConfigTest(PaydTestCase):
    shared_server = False

    def test_url_and_secret_required(self):
        for body, word in (("type = http\nsecret = x\n", "url"),
                           ("type = http\nurl = ftp://h/\nsecret = x\n", "url"),
                           ("type = http\nurl = http://127.0.0.1:1\n", "secret"),
                           ("type = http\nurl = http://127.0.0.1:1\nsecret = x\nmethods = ok,\n",
                            "methods"),
                           ("type = http\nurl = http://127.0.0.1:1\nsecret = x\n"
                            "methods = a b\n", "methods"),
                           ("type = http\nurl = http://127.0.0.1:1\nsecret = x\n"
                            "notify_url = ftp://x\n", "notify_url")):
            with self.subTest(body=body):
                s = self.start_server(start=False, config="[channel.psp]\n" + body, fast=False)
                try:
                    rc = s.spawn().wait(START_DEADLINE_S)
                except subprocess.TimeoutExpired:
                    self.fail("payd kept running with %r" % body)
                self.assertNotEqual(rc, 0)
                self.assertIn("[channel.psp] " + word, s.stderr_text())


if __name__ == "__main__":
    unittest.main()
