#!/usr/bin/env python3
"""
run.py - runs every tests/integration/test_*.py against payd.

  python3 tests/integration/run.py                 # all tests
  python3 tests/integration/run.py -k Idempotency  # tests whose id contains a pattern
  python3 tests/integration/run.py test_orders     # only the given module(s)
  PAYD_BIN=build-asan/payd python3 tests/integration/run.py

The last line printed is exactly "N passed, N failed"; the exit status is 0
only when nothing failed. A test that fails prints the stderr of the servers
it used. PAYD_KEEP_TMP=1 keeps the temporary data directories.
"""

import argparse
import os
import sys
import time
import traceback
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
CHAOS = os.path.join(os.path.dirname(HERE), "chaos")  # tests/chaos: the short chaos runs
sys.path.insert(0, HERE)
sys.path.insert(1, CHAOS)

import harness  # noqa: E402


class Result(unittest.TestResult):
    def __init__(self, stream):
        super().__init__()
        self.stream = stream
        self.passed = 0
        self.failed_ids = []
        self._t0 = {}

    def _line(self, text):
        self.stream.write(text + "\n")
        self.stream.flush()

    def startTest(self, test):
        super().startTest(test)
        self._t0[test.id()] = time.monotonic()

    def _elapsed(self, test):
        t0 = self._t0.get(test.id())
        return (time.monotonic() - t0) if t0 else 0.0

    def addSuccess(self, test):
        super().addSuccess(test)
        self.passed += 1
        self._line("ok      %-90s %6.1fs" % (test.id(), self._elapsed(test)))

    def _bad(self, word, test, err):
        if test.id() not in self.failed_ids:
            self.failed_ids.append(test.id())
        self._line("%-7s %-90s %6.1fs" % (word, test.id(), self._elapsed(test)))
        self._line("".join(traceback.format_exception(*err)).rstrip())
        logs = getattr(test, "server_logs", None)
        if callable(logs):
            try:
                text = logs()
                if text:
                    self._line(text)
            except Exception as e:  # never let reporting hide the failure
                self._line("(could not read server logs: %s)" % e)
        self._line("")

    def addFailure(self, test, err):
        super().addFailure(test, err)
        self._bad("FAIL", test, err)

    def addError(self, test, err):
        super().addError(test, err)
        self._bad("ERROR", test, err)

    def addSubTest(self, test, subtest, err):
        super().addSubTest(test, subtest, err)
        if err is not None:
            first = test.id() not in self.failed_ids
            if first:
                self.failed_ids.append(test.id())
            word = "FAIL" if issubclass(err[0], test.failureException) else "ERROR"
            self._line("%-7s %s" % (word, subtest.id()))
            self._line("".join(traceback.format_exception(*err)).rstrip())
            logs = getattr(test, "server_logs", None)
            if first and callable(logs):
                try:
                    self._line(logs())
                except Exception as e:
                    self._line("(could not read server logs: %s)" % e)
            self._line("")

    def addSkip(self, test, reason):
        super().addSkip(test, reason)
        self._line("skip    %s (%s)" % (test.id(), reason))

    def addUnexpectedSuccess(self, test):
        super().addUnexpectedSuccess(test)
        self.failed_ids.append(test.id())
        self._line("FAIL    %s (unexpected success)" % test.id())


def iter_tests(suite):
    for t in suite:
        if isinstance(t, unittest.TestSuite):
            yield from iter_tests(t)
        else:
            yield t


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-k", action="append", default=[], dest="patterns",
                    help="only tests whose id contains this substring (repeatable)")
    ap.add_argument("modules", nargs="*", help="test modules (test_x or test_x.py)")
    a = ap.parse_args()

    loader = unittest.TestLoader()
    if a.patterns:
        loader.testNamePatterns = ["*%s*" % p for p in a.patterns]
    if a.modules:
        suite = unittest.TestSuite()
        for m in a.modules:
            m = os.path.basename(m)
            if m.endswith(".py"):
                m = m[:-3]
            suite.addTests(loader.loadTestsFromName(m))
    else:
        suite = loader.discover(HERE, pattern="test_*.py", top_level_dir=HERE)
        suite.addTests(loader.discover(CHAOS, pattern="test_*.py", top_level_dir=CHAOS))

    total = suite.countTestCases()
    out = sys.stdout
    out.write("payd integration tests: %d tests, binary %s\n" % (total, harness.PAYD_BIN))
    out.flush()
    if not os.path.exists(harness.PAYD_BIN):
        out.write("warning: %s does not exist\n" % harness.PAYD_BIN)

    result = Result(out)
    t0 = time.monotonic()
    try:
        suite.run(result)
    except KeyboardInterrupt:
        out.write("interrupted\n")
    finally:
        harness._cleanup_all()

    skipped = len(result.skipped)
    # Tests that never ran because their class's setUpClass failed count as
    # failed, as do errors in setUpClass/module import themselves.
    failed = max(total - result.passed - skipped, len(result.failed_ids))
    out.write("\n%d tests in %.1f s; %d skipped\n" % (total, time.monotonic() - t0, skipped))
    if result.failed_ids:
        out.write("failed:\n")
        for i in result.failed_ids:
            out.write("  %s\n" % i)
    out.write("%d passed, %d failed\n" % (result.passed, failed))
    out.flush()
    return 0 if failed == 0 and result.wasSuccessful() else 1


if __name__ == "__main__":
    sys.exit(main())
