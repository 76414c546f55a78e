#!/usr/bin/env python3
"""Writes the replay load of bench/replay.sh and bench/restart-ab.sh to
stdout (JSON Lines): N cost_guard `spend_rate` readings over T tenants,
mostly calm with periodic spikes, so some tenants warn, intervene
(dispatching through the log adapter) and recover. Every tenant is approved
first: cost_guard acts on signals only with an active entitlement.

    bench/replay-signals.py N T > signals.jsonl
"""
import sys


def main() -> None:
    n, t = int(sys.argv[1]), int(sys.argv[2])
    out = sys.stdout
    for tenant in range(t):
        out.write('{"tenant":"t%d","entitlement":"approved","at":"2026-01-01T00:00:00Z"}\n' % tenant)
    for i in range(n):
        tenant = i % t
        step = i // t
        value = 120.5 if step % 50 in (10, 11, 12) else 10 + (i * 7919) % 30
        secs = step
        out.write('{"tenant":"t%d","signal":"spend_rate","value":%s,"at":"2026-01-01T%02d:%02d:%02dZ","id":"m-%d"}\n'
                  % (tenant, value, (secs // 3600) % 24, (secs // 60) % 60, secs % 60, i))


if __name__ == "__main__":
    main()
