#!/usr/bin/python3
"""paycheck - an independent checker of payd's money invariants.

It shares no code with payd: it reads payd's database with plain SQL (the
SQLite file of a data directory, or PostgreSQL), the channels' own journals
(the sandbox journal file, or paysim's witness journal over its control
API or from its data directory), and optionally the list of payment ids a
client was acknowledged (202). Then it counts every violation of:

  lost        an acknowledged payment that payd has no record of
  stuck       a payment or refund that is not final (processing)
  double      an order with more than one succeeded payment, or more than
              one charge at a channel (two serial numbers charged for one
              order), or a serial number charged twice
  missing     a succeeded payment the channel has no charge for
  extra       a charge at the channel that payd has no succeeded payment for
  mismatch    a charge whose amount or currency differs from the payment's
  overrefund  refunds (at payd or at the channel) above what was captured
  unbalanced  a currency whose ledger entries do not sum to zero, a transfer
              that does not, or a merchant whose balance is not its
              succeeded payments minus its succeeded refunds

It prints a table of the counts and, last, `check: ok` or `check: FAILED`
followed by the counts; the exit status is 0 when every count is 0, 1
otherwise, 2 on a bad command line or unreadable input.

    paycheck --data-dir DIR [--store-url URL] [--sandbox CHANNEL=FILE ...]
             [--paysim CHANNEL=URL | CHANNEL=DATADIR ...] [--acked FILE] [--json FILE]
             [--settle S]

--data-dir DIR   payd's data directory: DIR/payd.db, and the sandbox journal
                 DIR/sandbox.db for the channel "sandbox" unless --sandbox says
                 otherwise
--store-url URL  payd's PostgreSQL (libpq URI) instead of DIR/payd.db
--sandbox C=F    channel C is a sandbox whose journal is the file F
--paysim C=X     channel C is paysim: X is its base URL (its control API,
                 loopback only) or its data directory (DIR/paysim.db)
--acked FILE     payment ids the client was answered 202 for, one a line
--json FILE      the counts and the details as JSON
--settle S       first wait, up to S seconds, until payd's store holds no payment
                 or refund still processing (a system that was just under load
                 or faults finishing its work); then read everything and check
"""
import argparse
import collections
import json
import os
import sqlite3
import sys
import time
import urllib.request

KINDS = ["double", "lost", "stuck", "unbalanced", "missing", "extra", "mismatch", "overrefund"]
DETAILS_MAX = 20


class Input(Exception):
    pass


def sqlite_rows(path, sql, params=()):
    if not os.path.exists(path):
        raise Input("%s does not exist" % path)
    con = sqlite3.connect("file:%s?mode=ro" % path, uri=True, timeout=30)
    try:
        return con.execute(sql, params).fetchall()
    finally:
        con.close()


class PaydDb:
    """payd's tables, read with SQL of our own."""

    def __init__(self, data_dir, url):
        self.url = url
        self.path = os.path.join(data_dir, "payd.db") if data_dir else None
        if url:
            try:
                import psycopg2
            except ImportError:
                raise Input("reading PostgreSQL needs python3-psycopg2")
            self.con = psycopg2.connect(url)
            self.con.autocommit = True

    def rows(self, sql):
        if self.url:
            cur = self.con.cursor()
            cur.execute(sql)
            return cur.fetchall()
        return sqlite_rows(self.path, sql)

    def tables(self):
        if self.url:
            return {r[0] for r in self.rows(
                "SELECT tablename FROM pg_tables WHERE schemaname = 'public'")}
        return {r[0] for r in self.rows("SELECT name FROM sqlite_master WHERE type = 'table'")}


def settle(db, seconds):
    """Waits up to seconds until no payment or refund is processing."""
    deadline = time.monotonic() + seconds
    has_refunds = "refunds" in db.tables()
    while True:
        n = db.rows("SELECT count(*) FROM payments WHERE status = 'processing'")[0][0]
        if has_refunds:
            n += db.rows("SELECT count(*) FROM refunds WHERE status = 'processing'")[0][0]
        if n == 0 or time.monotonic() >= deadline:
            return
        time.sleep(0.2)


def read_paysim(where):
    """(charges, refunds) of paysim's journal: from its control API or its
    data directory."""
    if where.startswith("http://") or where.startswith("https://"):
        with urllib.request.urlopen(where.rstrip("/") + "/control/journal", timeout=60) as r:
            j = json.load(r)
        return j["charges"], j["refunds"]
    path = os.path.join(where, "paysim.db")
    cols_c = ["out_trade_no", "amount", "currency", "status"]
    cols_r = ["out_refund_no", "out_trade_no", "amount"]
    charges = [dict(zip(cols_c, r)) for r in sqlite_rows(
        path, "SELECT out_trade_no, amount, currency, status FROM charges")]
    refunds = [dict(zip(cols_r, r)) for r in sqlite_rows(
        path, "SELECT out_refund_no, out_trade_no, amount FROM refunds")]
    return charges, refunds


def read_sandbox(path):
    charges = [{"out_trade_no": r[0], "amount": r[1], "currency": r[2], "status": r[3]}
               for r in sqlite_rows(path, "SELECT serial_no, amount, currency, status"
                                          " FROM charges")]
    has_refunds = sqlite_rows(path, "SELECT count(*) FROM sqlite_master WHERE name = 'refunds'")
    refunds = []
    if has_refunds[0][0]:
        refunds = [{"out_refund_no": r[0], "out_trade_no": r[1], "amount": r[2]}
                   for r in sqlite_rows(path, "SELECT refund_no, serial_no, amount FROM refunds")]
    return charges, refunds


def check(db, journals, acked):
    found = collections.defaultdict(list)

    def bad(kind, what):
        found[kind].append(what)

    payments = db.rows("SELECT id, order_id, merchant_id, amount, currency, channel, status,"
                       " serial_no FROM payments")
    by_id = {p[0]: p for p in payments}
    by_serial = {p[7]: p for p in payments}
    has_refunds = "refunds" in db.tables()
    refunds = db.rows("SELECT id, payment_id, merchant_id, amount, status, refund_no, channel"
                      " FROM refunds") if has_refunds else []

    # Acknowledged and final.
    for pid in acked:
        if pid not in by_id:
            bad("lost", "payment %s was acknowledged but is not in payd" % pid)
    for p in payments:
        if p[6] not in ("succeeded", "failed"):
            bad("stuck", "payment %s is %s" % (p[0], p[6]))
    for r in refunds:
        if r[4] not in ("succeeded", "failed"):
            bad("stuck", "refund %s is %s" % (r[0], r[4]))

    # One success per order at payd.
    per_order = collections.Counter(p[1] for p in payments if p[6] == "succeeded")
    for order, n in per_order.items():
        if n > 1:
            bad("double", "order %s has %d succeeded payments" % (order, n))

    # The channels' journals against payd, one for one.
    captured = {}
    for channel, (charges, jrefunds) in journals.items():
        charged = [c for c in charges if c["status"] == "succeeded"]
        numbers = collections.Counter(c["out_trade_no"] for c in charged)
        for number, n in numbers.items():
            if n > 1:
                bad("double", "%s charged serial %s %d times" % (channel, number, n))
        orders = collections.Counter()
        for c in charged:
            p = by_serial.get(c["out_trade_no"])
            if p is None or p[5] != channel:
                bad("extra", "%s charged %s, which payd has no payment for"
                    % (channel, c["out_trade_no"]))
                continue
            orders[p[1]] += 1
            captured[p[0]] = c["amount"]
            if p[6] != "succeeded":
                bad("extra", "%s charged %s; payd's payment %s is %s"
                    % (channel, c["out_trade_no"], p[0], p[6]))
            if c["amount"] != p[3] or c["currency"] != p[4]:
                bad("mismatch", "%s charged %s %s %s; payd's payment %s is %s %s"
                    % (channel, c["out_trade_no"], c["amount"], c["currency"], p[0], p[3],
                       p[4]))
        for order, n in orders.items():
            if n > 1:
                bad("double", "order %s was charged %d times at %s" % (order, n, channel))
        charged_numbers = set(numbers)
        for p in payments:
            if p[5] == channel and p[6] == "succeeded" and p[7] not in charged_numbers:
                bad("missing", "payd's succeeded payment %s has no charge at %s" % (p[0], channel))
        per_trade = collections.Counter()
        for r in jrefunds:
            per_trade[r["out_trade_no"]] += r["amount"]
        amount_of = {c["out_trade_no"]: c["amount"] for c in charged}
        for number, total in per_trade.items():
            if total > amount_of.get(number, 0):
                bad("overrefund", "%s refunded %d of %s, which captured %d"
                    % (channel, total, number, amount_of.get(number, 0)))
        refunded_nos = {r["out_refund_no"] for r in jrefunds}
        for r in refunds:
            if r[6] == channel and r[4] == "succeeded" and r[5] not in refunded_nos:
                bad("missing", "payd's succeeded refund %s has no refund at %s" % (r[0], channel))
        payd_nos = {r[5] for r in refunds if r[4] == "succeeded"}
        for r in jrefunds:
            if r["out_refund_no"] not in payd_nos:
                bad("extra", "%s refunded %s, which payd has no succeeded refund for"
                    % (channel, r["out_refund_no"]))

    # Refunds at payd within the payment.
    refunded = collections.Counter()
    for r in refunds:
        if r[4] == "succeeded":
            refunded[r[1]] += r[3]
    for pid, total in refunded.items():
        p = by_id.get(pid)
        if p is None or total > p[3]:
            bad("overrefund", "payd refunded %d of payment %s (amount %s)"
                % (total, pid, p[3] if p else "?"))

    # The ledger.
    for currency, total in db.rows("SELECT currency, sum(amount) FROM ledger_entries"
                                   " GROUP BY currency"):
        if total != 0:
            bad("unbalanced", "the ledger's %s entries sum to %d" % (currency, total))
    for transfer, total in db.rows("SELECT transfer_id, sum(amount) FROM ledger_entries"
                                   " GROUP BY transfer_id HAVING sum(amount) <> 0"):
        bad("unbalanced", "transfer %s sums to %d" % (transfer, total))
    want = collections.Counter()
    for p in payments:
        if p[6] == "succeeded":
            want[("merchant:" + p[2], p[4])] += p[3]
    currency_of = {p[0]: p[4] for p in payments}
    for r in refunds:
        if r[4] == "succeeded":
            want[("merchant:" + r[2], currency_of.get(r[1], "?"))] -= r[3]
    have = collections.Counter()
    for account, currency, total in db.rows(
            "SELECT account, currency, sum(amount) FROM ledger_entries WHERE account LIKE"
            " 'merchant:%' GROUP BY account, currency"):
        have[(account, currency)] = total
    for key in set(want) | set(have):
        if want[key] != have[key]:
            bad("unbalanced", "%s %s: balance %d, succeeded minus refunded %d"
                % (key[0], key[1], have[key], want[key]))

    counts = {k: len(found[k]) for k in KINDS}
    totals = {"payments": len(payments),
              "succeeded": sum(1 for p in payments if p[6] == "succeeded"),
              "refunds": len(refunds), "acknowledged": len(acked),
              "channel_charges": sum(sum(1 for c in ch if c["status"] == "succeeded")
                                     for ch, _ in journals.values())}
    return counts, totals, {k: found[k][:DETAILS_MAX] for k in KINDS if found[k]}


def main():
    ap = argparse.ArgumentParser(prog="paycheck", description=__doc__.split("\n\n")[0])
    ap.add_argument("--data-dir")
    ap.add_argument("--store-url")
    ap.add_argument("--sandbox", action="append", default=[])
    ap.add_argument("--paysim", action="append", default=[])
    ap.add_argument("--acked")
    ap.add_argument("--json")
    ap.add_argument("--settle", type=float, default=0)
    a = ap.parse_args()
    if not a.data_dir and not a.store_url:
        ap.error("--data-dir or --store-url is required")
    try:
        db = PaydDb(a.data_dir, a.store_url)
        if a.settle > 0:
            settle(db, a.settle)
        journals = {}
        for spec in a.sandbox:
            channel, _, path = spec.partition("=")
            journals[channel] = read_sandbox(path)
        for spec in a.paysim:
            channel, _, where = spec.partition("=")
            journals[channel] = read_paysim(where)
        default_sandbox = os.path.join(a.data_dir or "", "sandbox.db")
        if "sandbox" not in journals and a.data_dir and os.path.exists(default_sandbox):
            journals["sandbox"] = read_sandbox(default_sandbox)
        acked = []
        if a.acked:
            with open(a.acked) as f:
                acked = [line.strip() for line in f if line.strip()]
        counts, totals, details = check(db, journals, acked)
    except (Input, OSError, sqlite3.Error, ValueError, KeyError) as e:
        print("paycheck: %s" % e, file=sys.stderr)
        return 2

    print("paycheck: %d payments (%d succeeded), %d refunds, %d acknowledged, "
          "%d charges at %s" % (totals["payments"], totals["succeeded"], totals["refunds"],
                                totals["acknowledged"], totals["channel_charges"],
                                ", ".join(sorted(journals)) or "no channel journal"))
    for k in KINDS:
        print("  %-11s %d" % (k, counts[k]))
        for line in details.get(k, []):
            print("      " + line)
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"counts": counts, "totals": totals, "details": details}, f, indent=1)
    ok = not any(counts.values())
    print("check: %s %s" % ("ok" if ok else "FAILED",
                            " ".join("%s=%d" % (k, counts[k]) for k in KINDS)))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
