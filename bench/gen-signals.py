#!/usr/bin/env python3
"""Writes recorded inputs for `ggen backtest` (the replay format, JSON Lines)
to stdout: a deterministic week (or any span) of cost_guard readings for N
tenants, in time order.

Each tenant is approved at the start (one in ten on the `enterprise` plan,
one in fifty moves to it mid-way) and reports `spend_rate` and `spend_spike`
every STEP seconds: a random walk around its own baseline with bursts that
cross the thresholds, so a threshold change has something to change.

    bench/gen-signals.py --tenants 1000 --signals 1000000 > signals.jsonl
    bench/gen-signals.py --tenants 50 --days 7 > week.jsonl
"""
import argparse
import datetime
import json
import random
import sys


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tenants", type=int, default=50)
    parser.add_argument("--days", type=float, default=7.0)
    parser.add_argument("--signals", type=int, default=0,
                        help="stop after this many signal lines (0: the whole span)")
    parser.add_argument("--step", type=int, default=0,
                        help="seconds between a tenant's readings (default: fit --signals into --days, else 300)")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    span = int(args.days * 86400)
    step = args.step or (max(1, span * args.tenants * 2 // args.signals) if args.signals else 300)
    start = datetime.datetime(2026, 11, 1, tzinfo=datetime.timezone.utc)
    out = sys.stdout
    write = out.write

    def at(seconds: int) -> str:
        return (start + datetime.timedelta(seconds=seconds)).strftime("%Y-%m-%dT%H:%M:%SZ")

    tenants = [f"tenant-{i:04d}" for i in range(args.tenants)]
    base = {t: rng.uniform(10, 60) for t in tenants}
    level = dict(base)
    burst = {t: 0 for t in tenants}
    for i, t in enumerate(tenants):
        line = {"tenant": t, "entitlement": "approved", "at": at(0)}
        if i % 10 == 0:
            line["plan"] = "enterprise"
        write(json.dumps(line, separators=(",", ":")) + "\n")
    written = 0
    n = 0
    moved = set()
    for now in range(step, span + 1, step):
        stamp = at(now)
        for i, t in enumerate(tenants):
            if i % 50 == 1 and t not in moved and now >= span // 2:
                moved.add(t)
                write(json.dumps({"tenant": t, "entitlement": "plan_changed",
                                  "plan": "enterprise", "at": stamp},
                                 separators=(",", ":")) + "\n")
            if burst[t] == 0 and rng.random() < 0.004:
                burst[t] = rng.randint(2, 12)
            if burst[t] > 0:
                burst[t] -= 1
                target = base[t] * rng.uniform(2.0, 12.0)
            else:
                target = base[t]
            level[t] = max(0.0, level[t] + (target - level[t]) * 0.6 + rng.gauss(0, 4))
            spike = max(0.0, (level[t] / base[t] - 1) * 100 + rng.gauss(0, 5))
            n += 1
            write('{"tenant":"%s","signal":"spend_rate","value":%.2f,"at":"%s","id":"r%d"}\n'
                  % (t, level[t], stamp, n))
            write('{"tenant":"%s","signal":"spend_spike","value":%.2f,"at":"%s","id":"s%d"}\n'
                  % (t, spike, stamp, n))
            written += 2
            if args.signals and written >= args.signals:
                return


if __name__ == "__main__":
    main()
