#!/usr/bin/env python3
"""Per-request costs from a callgrind file (`KEEP=1 bench/ir.sh hit` keeps one).

callgrind_annotate's exclusive mode attributes everything to `clone` on these
files; this reads the file itself.

  bench/cg.py FILE N self [TOP]        # instructions per request spent in each function itself
  bench/cg.py FILE N callers REGEX     # who calls the matching functions: calls and cost per request
  bench/cg.py FILE N callees REGEX     # what the matching functions spend, by callee (inclusive)

N is the number of requests (ir.sh prints it).
"""
import collections
import re
import sys


def parse(path):
    names = {}
    own = collections.Counter()
    calls = collections.defaultdict(collections.Counter)  # caller -> callee -> inclusive cost
    counts = collections.defaultdict(collections.Counter)  # caller -> callee -> calls
    cur = callee = None
    pending = None

    def name(s):
        m = re.match(r"\((\d+)\)(?: (.*))?", s)
        if not m:
            return s
        if m.group(2):
            names[m.group(1)] = m.group(2)
        return names.get(m.group(1), s)

    for line in open(path):
        line = line.rstrip("\n")
        if line.startswith("fn="):
            cur = name(line[3:])
        elif line.startswith("cfn="):
            callee = name(line[4:])
        elif line.startswith("calls="):
            pending = int(line[6:].split()[0])
        elif line and (line[0].isdigit() or line[0] in "+-*"):
            parts = line.split()
            if len(parts) < 2:
                continue
            if pending is not None:
                calls[cur][callee] += int(parts[1])
                counts[cur][callee] += pending
                pending = None
            else:
                own[cur] += int(parts[1])
    return own, calls, counts


def main():
    if len(sys.argv) < 4:
        sys.exit(__doc__)
    path, n, mode = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    own, calls, counts = parse(path)
    if mode == "self":
        total = sum(own.values())
        for f, c in own.most_common(int(sys.argv[4]) if len(sys.argv) > 4 else 40):
            print(f"{c / n:8.0f} {100 * c / total:5.1f}%  {f[:150]}")
        print(f"{total / n:8.0f} total per request")
    elif mode == "callers":
        pat = re.compile(sys.argv[4])
        cost, cnt = collections.Counter(), collections.Counter()
        for caller, row in calls.items():
            for callee, c in row.items():
                if pat.search(callee or ""):
                    cost[caller] += c
                    cnt[caller] += counts[caller][callee]
        for f, c in cost.most_common(25):
            print(f"{c / n:7.0f} per request  {cnt[f] / n:5.1f} calls  {c / max(1, cnt[f]):6.0f} per call  {f[:130]}")
    elif mode == "callees":
        pat = re.compile(sys.argv[4])
        for f in sorted(set(own) | set(calls)):
            if not pat.search(f):
                continue
            inclusive = own[f] + sum(c for k, c in calls[f].items() if k != f)
            print(f"== {inclusive / n:7.0f} inclusive, {own[f] / n:6.0f} self: {f[:150]}")
            for k, c in calls[f].most_common(15):
                if c / n >= 20:
                    print(f"     {c / n:7.0f}  {k[:140]}")
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
