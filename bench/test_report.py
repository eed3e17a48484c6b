#!/usr/bin/env python3
"""Unit tests of bench/report.py's verdicts (meson test bench-verdict, suite unit).

The verdict is taken on unrounded values; a spread of per-round values that
straddles the target gives "within noise". Also: docs/benchmarks.md quotes
`bench/run --method` for both run sizes verbatim.
"""
import io
import os
import subprocess
import sys
import unittest
from contextlib import redirect_stdout

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import report  # noqa: E402


def run(*argv):
    out = io.StringIO()
    with redirect_stdout(out):
        rc = report.main(["report.py", *argv])
    return rc, out.getvalue().strip()


class Verdict(unittest.TestCase):
    def test_rounded_display_does_not_pass(self):
        # shown as 0.90, still below 0.90
        self.assertEqual(report.verdict("0.8951", "ge", "0.90"), "miss")
        self.assertEqual(report.summary("{:.2f}", "ge", "0.90", "median", ["0.8951"])[0], "0.90")
        self.assertEqual(report.summary("{:.2f}", "ge", "0.90", "median", ["0.8951"])[3], "miss")
        # shown as x1.30, still above 1.3
        self.assertEqual(report.verdict("1.3049", "le", "1.3"), "miss")
        self.assertEqual(report.summary("x{:.2f}", "le", "1.3", "median", ["1.3049"])[:2], ("x1.30", "-"))
        self.assertEqual(report.summary("x{:.2f}", "le", "1.3", "median", ["1.3049"])[3], "miss")

    def test_exact_boundary_passes(self):
        self.assertEqual(report.verdict("0.90", "ge", "0.90"), "pass")
        self.assertEqual(report.verdict("0.9", "ge", "0.90"), "pass")
        self.assertEqual(report.verdict("1.3", "le", "1.3"), "pass")
        # a ratio that is exactly the boundary, computed from its parts
        # (16.51 / 12.7 in binary floating point is 1.3000000000000003)
        self.assertGreater(16.51 / 12.7, 1.3)
        r = report.div("16.51", "12.7")
        self.assertEqual(report.verdict(r, "le", "1.3"), "pass")
        self.assertEqual(report.verdict(report.div("2700", "3000"), "ge", "0.90"), "pass")
        rc, out = run("div", "26.0", "20.0")
        self.assertEqual((rc, out), (0, "13/10"))
        self.assertEqual(run("cmp", "13/10", "le", "1.3")[0], 0)
        # strict targets: the boundary itself misses
        self.assertEqual(report.verdict("20", "lt", "20"), "miss")
        self.assertEqual(report.verdict("19.999", "lt", "20"), "pass")

    def test_just_past_the_boundary(self):
        self.assertEqual(report.verdict("0.8999999", "ge", "0.90"), "miss")
        self.assertEqual(report.verdict("1.3000001", "le", "1.3"), "miss")
        self.assertEqual(run("cmp", "0.8951", "ge", "0.90")[0], 1)
        self.assertEqual(run("cmp", "1.3049", "le", "1.3")[0], 1)

    def test_spread_straddling_the_target_is_within_noise(self):
        self.assertEqual(report.summary("{:.2f}", "ge", "0.90", "median", ["0.85", "0.95"]),
                         ("0.90", "0.85-0.95", "2", "within noise"))
        self.assertEqual(report.summary("{:.2f}", "ge", "0.90", "median", ["0.86", "0.88", "0.93"])[3],
                         "within noise")
        self.assertEqual(report.summary("x{:.2f}", "le", "1.3", "median", ["1.25", "1.36"])[3],
                         "within noise")
        # a headline that is not the median (a pooled percentile) disagreeing
        # with rounds that all pass
        self.assertEqual(report.verdict("101", "lt", "100", ["95", "99"]), "within noise")

    def test_spread_on_one_side(self):
        self.assertEqual(report.summary("{:.2f}", "ge", "0.90", "median", ["0.91", "0.99"])[3], "pass")
        self.assertEqual(report.summary("{:.2f}", "ge", "0.90", "median", ["0.50", "0.8999"])[3], "miss")
        # the boundary itself is on the passing side
        self.assertEqual(report.summary("{:.2f}", "ge", "0.90", "median", ["0.90", "0.97"])[3], "pass")
        self.assertEqual(report.summary("{:.2f}", "ge", "0.90", "median", ["0.8999", "0.90"])[3],
                         "within noise")

    def test_one_round_has_no_spread(self):
        self.assertEqual(report.summary("{:.2f}", "ge", "0.7", "median", ["0.71"]), ("0.71", "-", "1", "pass"))

    def test_no_target_and_missing_values(self):
        self.assertEqual(report.summary("{:.2f}", "-", "-", "median", ["0.5", "0.6"])[3], "-")
        self.assertEqual(report.verdict(None, "ge", "0.9"), "-")
        self.assertEqual(report.div("1", "0"), None)
        self.assertEqual(run("div", "-", "3")[1], "-")
        self.assertEqual(run("cmp", "-", "ge", "1")[0], 2)

    def test_combined_verdicts(self):
        self.assertEqual(report.combine(["pass", "pass"]), "pass")
        self.assertEqual(report.combine(["pass", "within noise"]), "within noise")
        self.assertEqual(report.combine(["within noise", "miss"]), "miss")
        self.assertEqual(report.combine(["-", "pass"]), "pass")
        self.assertEqual(report.combine(["-"]), "-")

    def test_median_is_exact(self):
        self.assertEqual(report.median(["0.89", "0.91"]), report.exact("0.90"))
        self.assertEqual(report.verdict(report.median(["0.89", "0.91"]), "ge", "0.9", []), "pass")

    def test_exact_text(self):
        self.assertEqual(report.decimal(report.exact("1.0005")), "1.0005")
        self.assertEqual(report.decimal(report.median(["19.995", "19.996"])), "19.9955")
        self.assertEqual(report.decimal(report.exact("20")), "20")
        self.assertEqual(report.decimal(report.exact("0.05")), "0.05")
        self.assertEqual(report.decimal(report.exact("-1.5")), "-1.5")
        self.assertEqual(report.decimal(report.div("1", "3")), "1/3")
        # 19.9955 is shown as 20.00 but passes "< 20"
        self.assertEqual(report.summary("{:.2f}", "lt", "20", "median", ["19.995", "19.996"]),
                         ("20.00", "20.00-20.00", "2", "pass"))

    def test_add_is_exact(self):
        # a reaction and its phase (seconds from the database, 6 decimals)
        self.assertEqual(run("add", "2.620012", "0.380001"), (0, "3.000013"))
        self.assertEqual(report.add(["0.1", "0.2"]), report.exact("0.3"))
        self.assertEqual(run("add", "1/3", "1/6")[1], "0.5")
        self.assertEqual(run("add", "2.5", "-")[1], "-")
        self.assertEqual(run("add")[1], "-")
        # the sum over the bound, exactly on it, passes "<= 1"
        self.assertEqual(report.verdict(report.div(report.add(["2.75", "0.25"]), "3"), "le", "1"), "pass")

    def test_percentile_nearest_rank(self):
        vals = list(range(1, 101))
        self.assertEqual(report.percentile(vals, 50), 50)
        self.assertEqual(report.percentile(vals, 99), 99)
        self.assertEqual(report.percentile(vals, 100), 100)
        self.assertEqual(report.percentile([7], 99), 7)


class Window(unittest.TestCase):
    """pgbench -l lines: each transaction from its start (end - latency) to
    its end, in flight in a window or within it, exactly."""

    LINES = [
        "0 1 1500 0 1000 500000 100",      # 1000.4985 .. 1000.5
        "1 1 250000 0 1000 750000 3",      # 1000.5 .. 1000.75
        "1 2 failed 0 1000 800000 0",      # no latency: failed, an instant at 1000.8
        "2 7 999 0 1001 0",                # without -R's lag field: 1000.999001 .. 1001
        "3 1 20 0 999 999990 0 0",         # with a retries field: 999.99997 .. 999.99999
        "",
    ]

    def test_overlap_exact_boundaries(self):
        w = lambda a, b: report.window(self.LINES, a, b, "overlap")
        # in flight at some time in [a, b): start < b and end > a
        self.assertEqual(w("1000.4985", "1000.49850001"), (1, 0, 1500, 1500, 1400))
        self.assertEqual(w("1000.4", "1000.4985"), (0, 0, None, None, None))      # starts at b: outside
        self.assertEqual(w("1000.5", "1000.6"), (1, 0, 250000, 250000, 249997))     # ends at a: outside
        self.assertEqual(w("1000.4999", "1000.6"), (2, 0, 250000, 250000, 249997))
        # a long write that started before the window and ended after it is in it
        self.assertEqual(w("1000.6", "1000.7"), (1, 0, 250000, 250000, 249997))
        self.assertEqual(w("1000.76", "1000.81"), (0, 1, None, None, None))

    def test_within(self):
        w = lambda a, b: report.window(self.LINES, a, b, "within")
        self.assertEqual(w("1000.4985", "1000.6"), (1, 0, 1500, 1500, 1400))     # the long one ends after b
        self.assertEqual(w("1000.4985", "1000.75"), (1, 0, 1500, 1500, 1400))    # ends at b: outside
        self.assertEqual(w("1000.4985", "1000.750001"), (2, 0, 250000, 250000, 249997))
        self.assertEqual(w("1000.4986", "1000.750001"), (1, 0, 250000, 250000, 249997))
        self.assertEqual(w("1000.8", "1000.81"), (0, 1, None, None, None))
        with self.assertRaises(ValueError):
            report.window(self.LINES, "0", "1", "around")

    def test_whole_log(self):
        # the line without a lag field: no statement-alone figure
        self.assertEqual(report.window(self.LINES, "0", "2000", "within"), (4, 1, 250000, 250000, None))
        self.assertEqual(report.window(self.LINES, "999", "1000.9", "within"), (3, 1, 250000, 250000, 249997))
        # the command's output, from files
        import tempfile
        with tempfile.TemporaryDirectory() as d:
            a, b = os.path.join(d, "tx.1"), os.path.join(d, "tx.1.1")
            with open(a, "w") as f:
                f.write("\n".join(self.LINES[:3]) + "\n")
            with open(b, "w") as f:
                f.write("\n".join(self.LINES[3:]) + "\n")
            self.assertEqual(run("window", "overlap", "999", "1001", a, b), (0, "4\t1\t250000\t250000\t-"))
            self.assertEqual(run("window", "overlap", "999", "1000.9", a, b), (0, "3\t1\t250000\t250000\t249997"))
            self.assertEqual(run("window", "within", "5", "6", a), (0, "0\t0\t-\t-\t-"))

    def test_p99_nearest_rank(self):
        lines = [f"0 {i} {i * 10} 0 100 {i} {i}" for i in range(1, 201)]   # 200 transactions, 10..2000 us
        self.assertEqual(report.window(lines, "0", "200", "overlap"), (200, 0, 2000, 1980, 1800))


class DocsQuoteTheMethod(unittest.TestCase):
    """docs/benchmarks.md quotes `bench/run --method` (full and quick) verbatim."""

    def test_method_block(self):
        root = os.path.dirname(HERE)
        doc = open(os.path.join(root, "docs", "benchmarks.md"), encoding="utf-8").read()
        env = {k: v for k, v in os.environ.items() if not k.startswith("BENCH_")}
        for args, mark in (([], "METHOD-FULL"), (["--quick"], "METHOD-QUICK")):
            out = subprocess.run(["bash", os.path.join(HERE, "run"), "--method", *args], env=env,
                                 check=True, capture_output=True, text=True).stdout
            begin, end = f"<!-- {mark}:BEGIN -->\n```\n", f"```\n<!-- {mark}:END -->"
            self.assertIn(begin, doc)
            quoted = doc.split(begin, 1)[1].split(end, 1)[0]
            self.assertEqual(quoted, out, f"docs/benchmarks.md {mark} differs from bench/run --method {' '.join(args)}")


if __name__ == "__main__":
    unittest.main(verbosity=2)
