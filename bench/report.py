#!/usr/bin/env python3
"""bench/report.py - the arithmetic, the verdicts and the final table for bench/run.

Kept in Python (standard library only) because bash has no floating point.
Values travel between bench/run and here as exact decimal or "p/q" strings:
nothing is rounded until it is displayed, and every verdict is taken on the
unrounded value (0.8951 is shown as 0.90 but misses ">= 0.90").

  report.py median V...               median of the values ("-" when none), 1 decimal
  report.py median-col FILE COL       median of one whitespace column of a file, exact
  report.py pct FILE P [TIMEOUT_MS]   P-th percentile (nearest rank) of a file of numbers, exact;
                                      "timeout" lines count as TIMEOUT_MS (default 30000)
  report.py div A B                   A/B exactly, as "p/q" ("-" when either is missing or B is 0)
  report.py add V...                  the sum exactly, as a decimal or "p/q" ("-" when one is missing)
  report.py ratio A B [DIGITS]        A/B for display, rounded ("-" when missing)
  report.py cmp A OP B                exit 0 when A OP B holds (OP: lt le gt ge), unrounded
  report.py window MODE FROM TO FILE...
                                      pgbench per-transaction logs (-l), each transaction from
                                      its start (its end minus its latency: with -R, its
                                      scheduled start) to its end; MODE overlap: those in flight
                                      at some time in [FROM, TO) (epoch seconds), within: those
                                      that started and ended in it. Tab-separated: count, failed
                                      (no latency: failed, skipped...), the max and the p99
                                      (nearest rank) latency, and the max of latency - schedule
                                      lag (the statement alone, -R only), in microseconds, exact
  report.py summary FMT OP TARGET HEADLINE V...
                                      one row's figures, tab-separated: headline, spread
                                      (min-max of the per-round values V), rounds, verdict.
                                      HEADLINE "median" = the median of V. FMT: a format
                                      such as "{:.2f}" or "x{:.2f}". OP "-" = no target.
  report.py verdicts V...             combine the verdicts of a row's parts
  report.py table TSV HEADER_FILE     print the aligned table

Verdicts: "pass" / "miss" by the headline against the target; "within noise"
when the headline and the per-round values do not all fall on the same side
of the target (a verdict that another round could flip).
"""
import math
import statistics
import sys
from fractions import Fraction

OPS = {
    "lt": lambda a, b: a < b,
    "le": lambda a, b: a <= b,
    "gt": lambda a, b: a > b,
    "ge": lambda a, b: a >= b,
}
PASS, MISS, NOISE = "pass", "miss", "within noise"


def exact(s):
    """An exact value from "1.25", "5/4", "1e3", or a number; None when not one."""
    if s is None:
        return None
    if isinstance(s, Fraction):
        return s
    try:
        return Fraction(s) if isinstance(s, (int, str)) else Fraction(str(s))
    except (TypeError, ValueError, ZeroDivisionError):
        return None


def num(s):
    v = exact(s)
    return None if v is None else float(v)


def median(vals):
    vals = [v for v in (exact(x) for x in vals) if v is not None]
    return statistics.median(vals) if vals else None


def fmt(v, digits=1):
    return "-" if v is None else f"{float(v):.{digits}f}"


def decimal(v):
    """An exact value as text: a decimal when it has one, else "p/q"."""
    if v is None:
        return "-"
    d = v.denominator
    twos = fives = 0
    while d % 2 == 0:
        d //= 2
        twos += 1
    while d % 5 == 0:
        d //= 5
        fives += 1
    if d != 1:
        return f"{v.numerator}/{v.denominator}"
    places = max(twos, fives)
    scaled = v * 10 ** places
    sign = "-" if scaled < 0 else ""
    digits = str(abs(scaled.numerator)).rjust(places + 1, "0")
    return sign + (digits[:-places] + "." + digits[-places:] if places else digits)


def div(a, b):
    a, b = exact(a), exact(b)
    if a is None or not b:
        return None
    return a / b


def add(vals):
    xs = [exact(v) for v in vals]
    if not xs or any(x is None for x in xs):
        return None
    return sum(xs, Fraction(0))


def verdict(headline, op, target, rounds=()):
    """pass / miss of HEADLINE OP TARGET, on the exact values; "within noise"
    when the per-round values and the headline do not all agree."""
    h, t = exact(headline), exact(target)
    if h is None or t is None:
        return "-"
    check = OPS[op]
    sides = {check(h, t)}
    for r in rounds:
        r = exact(r)
        if r is not None:
            sides.add(check(r, t))
    if len(sides) > 1:
        return NOISE
    return PASS if check(h, t) else MISS


def combine(verdicts):
    """A row with several targets: any miss misses, else any noise is noise."""
    vs = [v for v in verdicts if v and v != "-"]
    if not vs:
        return "-"
    if MISS in vs:
        return MISS
    if NOISE in vs:
        return NOISE
    return PASS


def summary(form, op, target, headline, vals):
    """(headline text, spread text, rounds, verdict) for one row."""
    xs = [v for v in (exact(x) for x in vals) if v is not None]
    h = median(xs) if headline == "median" else exact(headline)
    show = lambda v: "-" if v is None else form.format(float(v))
    spread = f"{show(min(xs))}-{show(max(xs))}" if len(xs) > 1 else "-"
    if op == "-":
        ver = "-"
    else:
        ver = verdict(h, op, target, xs)
    return show(h), spread, str(len(xs)), ver


def percentile(vals, p):
    """Nearest rank."""
    vals = sorted(vals)
    if not vals:
        return None
    rank = max(1, math.ceil(float(p) / 100.0 * len(vals)))
    return vals[rank - 1]


def window(lines, t_from, t_to, mode="overlap"):
    """pgbench -l lines ("client txn latency_us script epoch us [lag] [retries]"):
    (count, failed, max latency, p99 latency, max of latency - lag) of the
    transactions (the last None without lag fields, from pgbench -R), each from
    its start (end - latency) to its end, that were in flight at some time
    in [t_from, t_to) (mode "overlap": start < t_to and end > t_from), or
    that started and ended in it (mode "within": t_from <= start and end <
    t_to). A transaction without a latency (failed, skipped...) is taken as
    an instant at its end."""
    a, b = exact(t_from), exact(t_to)
    if mode not in ("overlap", "within"):
        raise ValueError(f"window mode {mode!r}: overlap or within")
    lats, failed, own = [], 0, []
    for line in lines:
        f = line.split()
        if len(f) < 6:
            continue
        end = Fraction(int(f[4])) + Fraction(int(f[5]), 1000000)
        lat = int(f[2]) if f[2].isdigit() else None
        start = end - Fraction(lat or 0, 1000000)
        if not (start < b and end > a if mode == "overlap" else a <= start and end < b):
            continue
        if lat is None:
            failed += 1
        else:
            lats.append(lat)
            if len(f) >= 7 and f[6].isdigit():
                own.append(lat - int(f[6]))
    return (len(lats), failed, (max(lats) if lats else None), percentile(lats, 99),
            (max(own) if own and len(own) == len(lats) else None))


COLS = ["benchmark", "pgshadow", "baseline", "ratio", "spread (min-max)", "rounds", "target", "verdict"]


def table(tsv, header_file):
    n = len(COLS)
    rows = []
    with open(tsv, encoding="utf-8") as f:
        for line in f:
            line = line.rstrip("\n")
            if line:
                cells = line.split("\t")
                rows.append((cells + [""] * n)[:n])
    widths = [max(len(r[i]) for r in rows + [COLS]) for i in range(n)]
    out = []
    with open(header_file, encoding="utf-8") as f:
        out.extend(l.rstrip("\n") for l in f)
    out.append("")
    line = lambda cells: "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths)) + " |"
    out.append(line(COLS))
    out.append("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    out.extend(line(r) for r in rows)
    print("\n".join(out))


def main(argv):
    cmd = argv[1] if len(argv) > 1 else ""
    if cmd == "median":
        print(fmt(median(argv[2:]), 1))
    elif cmd == "median-col":
        col = int(argv[3])
        with open(argv[2], encoding="utf-8") as f:
            vals = [l.split()[col] for l in f if len(l.split()) > col]
        print(decimal(median(vals)))
    elif cmd == "pct":
        timeout = exact(argv[4] if len(argv) > 4 else "30000")
        with open(argv[2], encoding="utf-8") as f:
            vals = [timeout if l.strip() == "timeout" else exact(l.strip()) for l in f if l.strip()]
        v = percentile(vals, argv[3])
        print(decimal(v))
        return 0 if v is not None else 1
    elif cmd == "div":
        v = div(argv[2], argv[3])
        print("-" if v is None else f"{v.numerator}/{v.denominator}")
    elif cmd == "add":
        print(decimal(add(argv[2:])))
    elif cmd == "ratio":
        digits = int(argv[4]) if len(argv) > 4 else 2
        v = div(argv[2], argv[3])
        print("-" if v is None else fmt(v, digits))
    elif cmd == "cmp":
        a, op, b = exact(argv[2]), argv[3], exact(argv[4])
        if a is None or b is None:
            return 2
        return 0 if OPS[op](a, b) else 1
    elif cmd == "window":
        lines = []
        for path in argv[5:]:
            with open(path, encoding="utf-8") as f:
                lines.extend(f)
        res = window(lines, argv[3], argv[4], argv[2])
        print("\t".join("-" if v is None else str(v) for v in res))
    elif cmd == "summary":
        form, op, target, headline = argv[2:6]
        print("\t".join(summary(form, op, target, headline, argv[6:])))
    elif cmd == "verdicts":
        print(combine(argv[2:]))
    elif cmd == "table":
        table(argv[2], argv[3])
    else:
        print(__doc__, file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
