#!/usr/bin/env python3
"""bench/report.py - the arithmetic and the final table for bench/run.

Kept in Python (standard library only) because bash has no floating point.

  report.py median V...               median of the values ("-" when none)
  report.py median-col FILE COL       median of one whitespace column of a file
  report.py pct FILE P                P-th percentile (nearest rank) of a file of numbers
  report.py ratio A B [DIGITS]        A/B, "-" when either is missing or B is 0
  report.py cmp A OP B                exit 0 when A OP B holds (OP: lt le gt ge)
  report.py table TSV HEADER_FILE     print the aligned table
"""
import statistics
import sys


def num(s):
    try:
        return float(s)
    except (TypeError, ValueError):
        return None


def median(vals):
    vals = [v for v in (num(x) for x in vals) if v is not None]
    return statistics.median(vals) if vals else None


def fmt(v, digits=1):
    return "-" if v is None else f"{v:.{digits}f}"


def table(tsv, header_file):
    rows = []
    with open(tsv, encoding="utf-8") as f:
        for line in f:
            line = line.rstrip("\n")
            if line:
                cells = line.split("\t")
                rows.append((cells + [""] * 6)[:6])
    head = ["benchmark", "pgshadow", "baseline", "ratio", "target", "pass/miss"]
    widths = [max(len(r[i]) for r in rows + [head]) for i in range(6)]
    out = []
    with open(header_file, encoding="utf-8") as f:
        out.extend(l.rstrip("\n") for l in f)
    out.append("")
    line = lambda cells: "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths)) + " |"
    out.append(line(head))
    out.append("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    out.extend(line(r) for r in rows)
    print("\n".join(out))


def main(argv):
    cmd = argv[1]
    if cmd == "median":
        print(fmt(median(argv[2:]), 1))
    elif cmd == "median-col":
        col = int(argv[3])
        with open(argv[2], encoding="utf-8") as f:
            vals = [l.split()[col] for l in f if len(l.split()) > col]
        print(fmt(median(vals), 3))
    elif cmd == "pct":
        # pct FILE P: the P-th percentile (nearest rank) of one number a line;
        # "timeout" lines count as 30000 ms
        with open(argv[2], encoding="utf-8") as f:
            vals = sorted(30000.0 if l.strip() == "timeout" else float(l) for l in f if l.strip())
        if not vals:
            print("-")
            return 1
        import math
        rank = max(1, math.ceil(float(argv[3]) / 100.0 * len(vals)))
        print(fmt(vals[rank - 1], 1))
    elif cmd == "ratio":
        a, b = num(argv[2]), num(argv[3])
        digits = int(argv[4]) if len(argv) > 4 else 2
        print(fmt(a / b, digits) if a is not None and b else "-")
    elif cmd == "cmp":
        a, op, b = num(argv[2]), argv[3], num(argv[4])
        if a is None or b is None:
            return 2
        ok = {"lt": a < b, "le": a <= b, "gt": a > b, "ge": a >= b}[op]
        return 0 if ok else 1
    elif cmd == "table":
        table(argv[2], argv[3])
    else:
        print(__doc__, file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
