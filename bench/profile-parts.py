#!/usr/bin/env python3
"""Files each sample of `perf script -F comm,tid,ip,sym` (call stacks from
`perf record --call-graph dwarf`) under one part of a request's path, and
prints each part's share and its CPU µs per request.

    perf script -F comm,tid,ip,sym -i DATA | bench/profile-parts.py REQUESTS CPU_US

REQUESTS: requests completed while perf recorded; CPU_US: the CPU time the
samples stand for, in µs (samples × the sampling period). A sample goes to
the first part in PARTS with a frame in its stack that matches (generic
arguments stripped first, so a type parameter naming a timer does not file
the whole connection under timers); the writer thread's parts apply to the
`ledger-writer` thread only.
"""

import collections
import re
import sys

PARTS = [
    ("writer: fdatasync", r"fdatasync|do_fsync"),
    ("writer: pwrite", r"pwrite"),
    ("writer: leaf and node hashes", r"hash_leaves|FileTree::push|merkle"),
    ("response writev", r"sys_writev|write_vectored"),
    ("request read", r"sys_recvfrom|poll_read_from_io|AsyncRead"),
    ("scheduling, parking", r"^schedule$|^__schedule|^finish_task_switch|epoll_wait|::park|futex|Condvar|nanosleep"),
    ("handler: receipt encoding", r"Receipt::encode|canonical::"),
    ("handler: ledger append", r"FileLedger::append|chain_hash"),
    ("handler: durability wait", r"durab|SyncPoint|Ticket"),
    ("handler: registry, policy", r"registry::|policy::|fsm::"),
    ("handler: JSON", r"serde_json|body::parse|SignalBody"),
    ("metrics", r"metrics"),
    ("timers", r"tokio::runtime::time|tokio::time|TimerEntry|Sleep|tokio_io_timeout"),
    ("handler: the rest", r"ingress::signals"),
    ("axum, layers", r"axum|ingress::observe|ingress::shed|ingress::auth|tower"),
    ("hyper, the rest", r"hyper"),
    ("allocator", r"mi_|malloc|free"),
]
PARTS = [(name, re.compile(pattern)) for name, pattern in PARTS]
WRITER = "ledger-writer"


def strip(frame):
    """The frame's function path without generic arguments; `<X as T>::f` as `X::f`."""
    m = re.match(r"<([^ ]+) as .*?>::(.*)", frame)
    if m:
        frame = m.group(1) + "::" + m.group(2)
    out, depth = [], 0
    for ch in frame:
        if ch == "<":
            depth += 1
        elif ch == ">":
            depth = max(0, depth - 1)
        elif depth == 0:
            out.append(ch)
    return "".join(out)


def part(comm, frames):
    for name, rx in PARTS:
        if name.startswith("writer") and comm != WRITER:
            continue
        if any(rx.search(f) for f in frames):
            return name
    return "other"


def main():
    requests, cpu_us = float(sys.argv[1]), float(sys.argv[2])
    counts = collections.Counter()
    samples = 0
    comm, frames = None, []

    def flush():
        nonlocal samples
        if frames:
            samples += 1
            thread = "writer" if comm == WRITER else "server"
            counts[(thread, part(comm, frames))] += 1

    for line in sys.stdin:
        if not line.strip():
            flush()
            comm, frames = None, []
        elif not line.startswith((" ", "\t")):
            comm, frames = line.split()[0], []
        else:
            fields = line.strip().split(" ", 1)
            if len(fields) == 2:
                frames.append(strip(fields[1]))
    flush()
    if samples == 0:
        sys.exit("no samples")
    for (thread, name), k in sorted(counts.items(), key=lambda kv: -kv[1]):
        print(f"{thread:7s} {name:30s} {100 * k / samples:5.1f}%  {cpu_us * k / samples / requests:6.2f} µs/req")
    print(f"total: {cpu_us / requests:.2f} µs/req over {samples} samples")


if __name__ == "__main__":
    main()
