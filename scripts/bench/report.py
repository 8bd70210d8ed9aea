#!/usr/bin/env python3
"""Helpers for scripts/bench.sh: parse iperf3 and ping output, and turn the raw
per-repetition records into medians, a Markdown table and a JSON file.

  report.py iperf FILE        -> "MBIT_PER_S BYTES RETRANSMITS" (receiver side)
  report.py ping FILE         -> "AVG_MS P99_MS SENT RECEIVED"
  report.py cpu PID...        -> total utime+stime of the PIDs, in clock ticks
  report.py report --records TSV --meta TSV --md OUT.md --json OUT.json

Errors go to stderr with exit status 1, so the caller can say which step failed.
Only the standard library is used.
"""

import json
import math
import os
import re
import statistics
import sys

# Metric keys, in table order: (key, JSON unit, Markdown header).
THROUGHPUT = [
    ("up1_mbps", "1-stream up"),
    ("up4_mbps", "4-stream up"),
    ("down1_mbps", "1-stream down"),
]
SYSTEM_NAMES = {
    "plain": "plain routed veth (no VPN)",
    "twoway": "twoway (TLS 1.3/TCP)",
    "openvpn-tcp": "OpenVPN 2.6, TCP",
}
# What issue 6 asks of twoway, in the same run.
GOALS = {
    "vs_openvpn_x": 15.0,
    "vs_plain_pct": 35.0,
    "ping_load_p99_ms": 5.0,
    "cpu_s_per_gb": 2.0,
}


def fail(msg):
    print(msg, file=sys.stderr)
    sys.exit(1)


def percentile(values, pct):
    """Nearest-rank percentile (p99 of 20 samples is the largest)."""
    s = sorted(values)
    rank = max(1, math.ceil(pct / 100.0 * len(s)))
    return s[rank - 1]


def cmd_iperf(path):
    try:
        with open(path) as f:
            data = json.load(f)
    except (OSError, ValueError) as e:
        fail(f"cannot read iperf3 JSON {path}: {e}")
    if data.get("error"):
        fail(f"iperf3 reported: {data['error']}")
    end = data.get("end") or {}
    recv = end.get("sum_received") or end.get("sum") or {}
    sent = end.get("sum_sent") or {}
    bps = recv.get("bits_per_second")
    nbytes = recv.get("bytes")
    if not bps or not nbytes:
        fail(f"iperf3 JSON {path} has no received throughput (nothing arrived?)")
    print(f"{bps / 1e6:.1f} {nbytes} {sent.get('retransmits', 0)}")


TIME_RE = re.compile(r"icmp_seq=\d+ .*time=([0-9.]+) ms")
STATS_RE = re.compile(r"(\d+) packets transmitted, (\d+) received")


def cmd_ping(path):
    try:
        with open(path) as f:
            text = f.read()
    except OSError as e:
        fail(f"cannot read ping output {path}: {e}")
    rtts = [float(m.group(1)) for m in TIME_RE.finditer(text)]
    m = STATS_RE.search(text)
    sent, received = (int(m.group(1)), int(m.group(2))) if m else (0, len(rtts))
    if not rtts:
        fail(f"no ping replies ({sent} sent)")
    print(f"{statistics.mean(rtts):.3f} {percentile(rtts, 99):.3f} {sent} {received}")


def cmd_cpu(pids):
    """Sum of utime+stime (fields 14 and 15 of /proc/PID/stat) in ticks."""
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                stat = f.read()
        except OSError:
            fail(f"process {pid} is gone (cannot read /proc/{pid}/stat)")
        # The command name (field 2) may hold spaces: split after its ')'.
        fields = stat[stat.rindex(")") + 2:].split()
        total += int(fields[11]) + int(fields[12])
    print(total)


def read_tsv(path):
    rows = []
    with open(path) as f:
        for line in f:
            line = line.rstrip("\n")
            if line:
                rows.append(line.split("\t"))
    return rows


def num(text):
    try:
        return float(text)
    except ValueError:
        return None


def fmt(value, digits=0, thousands=True):
    if value is None:
        return "n.a."
    if thousands:
        return f"{value:,.{digits}f}"
    return f"{value:.{digits}f}"


def cmd_report(args):
    opts = dict(zip(args[::2], args[1::2]))
    for need in ("--records", "--meta", "--md", "--json"):
        if need not in opts:
            fail(f"report: missing {need}")
    meta = {}
    for row in read_tsv(opts["--meta"]):
        meta[row[0]] = row[1] if len(row) > 1 else ""
    systems = [s for s in meta.get("systems", "").split(",") if s]
    reps = int(meta.get("reps", "0"))

    # raw[system][key] = [value per rep or None]; errors: list of dicts
    raw = {s: {} for s in systems}
    errors = []
    for row in read_tsv(opts["--records"]):
        rep, system, key, value = int(row[0]), row[1], row[2], "\t".join(row[3:])
        if key == "error":
            errors.append({"rep": rep, "system": system, "message": value})
            continue
        series = raw.setdefault(system, {}).setdefault(key, [None] * reps)
        series[rep - 1] = num(value) if num(value) is not None else value

    medians = {}
    for system, metrics in raw.items():
        medians[system] = {}
        for key, series in metrics.items():
            if any(isinstance(v, str) for v in series):
                continue  # a label such as route_dev, not a measurement
            vals = [v for v in series if v is not None]
            medians[system][key] = statistics.median(vals) if vals else None

    def med(system, key):
        return medians.get(system, {}).get(key)

    # Ratios for twoway, from the medians.
    ratios = {}
    for d, key in (("up", "up1_mbps"), ("down", "down1_mbps")):
        tw, ov, pl = med("twoway", key), med("openvpn-tcp", key), med("plain", key)
        ratios[f"{d}_vs_openvpn_x"] = tw / ov if tw and ov else None
        ratios[f"{d}_vs_plain_pct"] = 100.0 * tw / pl if tw and pl else None

    lines = []
    lines.append("## twoway benchmark")
    lines.append("")
    lines.append(f"- machine: {meta.get('nproc', '?')} CPUs, {meta.get('cpu_model', '?')}, "
                 f"kernel {meta.get('kernel', '?')}")
    lines.append(f"- date: {meta.get('date', '?')}")
    if "twoway" in systems:
        lines.append(f"- twoway: {meta.get('twoway_rev', '?')}; server log: {meta.get('twoway_session', '?')}")
    lines.append(f"- method: {reps} interleaved repetition(s) (each VPN freshly started), "
                 f"medians; iperf3 {meta.get('secs', '?')} s per run, {meta.get('iperf3', '?')}; "
                 f"ping {meta.get('ping_count', '?')} x 0.1 s cli -> lan; "
                 f"CPU = utime+stime of the VPN server and client processes {meta.get('cpu_basis', '')}")
    if "openvpn-tcp" in systems:
        lines.append(f"- OpenVPN: {meta.get('openvpn_version', '?')}; options: {meta.get('openvpn_options', '?')}; "
                     f"negotiated: {meta.get('openvpn_session', '?')}")
    lines.append("")
    header = ("| system | 1-stream up | 4-stream up | 1-stream down | ping idle avg / p99 "
              "| ping load avg / p99 | CPU s/GB |")
    lines.append(header)
    lines.append("|---|---:|---:|---:|---:|---:|---:|")
    lines.append("| | Mbit/s | Mbit/s | Mbit/s | ms | ms | VPN processes |")
    for system in systems:
        cells = [SYSTEM_NAMES.get(system, system)]
        for key, _ in THROUGHPUT:
            cells.append(fmt(med(system, key)))
        for kind in ("idle", "load"):
            a, p = med(system, f"ping_{kind}_avg"), med(system, f"ping_{kind}_p99")
            cells.append(f"{fmt(a, 2)} / {fmt(p, 2)}")
        cells.append("n.a." if system == "plain" else fmt(med(system, "cpu_s_per_gb"), 1))
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")

    if "twoway" in systems:
        parts = []
        if "openvpn-tcp" in systems:
            parts.append("twoway vs OpenVPN-TCP: up "
                         f"{fmt(ratios['up_vs_openvpn_x'], 1)}x, down {fmt(ratios['down_vs_openvpn_x'], 1)}x")
        if "plain" in systems:
            parts.append("twoway vs plain: up "
                         f"{fmt(ratios['up_vs_plain_pct'], 0)} %, down {fmt(ratios['down_vs_plain_pct'], 0)} %")
        if parts:
            lines.append("**Ratios (single stream, medians):** " + "; ".join(parts) + ".")
            lines.append("")
        goal_parts = []

        def goal(label, value, ok):
            mark = "n.a." if value is None else ("met" if ok(value) else "NOT met")
            goal_parts.append(f"{label}: {mark}")

        if "openvpn-tcp" in systems:
            goal("up/down >= 15x OpenVPN-TCP", min_or_none(ratios["up_vs_openvpn_x"], ratios["down_vs_openvpn_x"]),
                 lambda v: v >= GOALS["vs_openvpn_x"])
        if "plain" in systems:
            goal("up/down >= 35 % of plain", min_or_none(ratios["up_vs_plain_pct"], ratios["down_vs_plain_pct"]),
                 lambda v: v >= GOALS["vs_plain_pct"])
        goal("ping p99 under load <= 5 ms", med("twoway", "ping_load_p99"), lambda v: v <= GOALS["ping_load_p99_ms"])
        goal("CPU <= 2 s/GB", med("twoway", "cpu_s_per_gb"), lambda v: v <= GOALS["cpu_s_per_gb"])
        lines.append("Issue 6 goals for twoway: " + "; ".join(goal_parts) + ".")
        lines.append("")

    if errors:
        lines.append("**Failed steps** (their values are missing from the medians):")
        lines.append("")
        for e in errors:
            lines.append(f"- rep {e['rep']}, {e['system']}: {e['message']}")
        lines.append("")

    md = "\n".join(lines)
    result = {
        "machine": {k: meta.get(k) for k in ("nproc", "cpu_model", "kernel", "date", "hostname")},
        "settings": {k: (int(v) if v.isdigit() else v) for k, v in meta.items()
                     if k not in ("nproc", "cpu_model", "kernel", "date", "hostname")},
        "units": {"*_mbps": "Mbit/s (iperf3 receiver)", "*_bytes": "bytes", "ping_*": "ms",
                  "cpu_s": "CPU seconds (utime+stime) of the VPN processes during the CPU run",
                  "cpu_s_per_gb": "CPU seconds per 1e9 bytes received"},
        "raw": raw,
        "medians": medians,
        "ratios": ratios,
        "errors": errors,
    }
    with open(opts["--md"], "w") as f:
        f.write(md + "\n")
    with open(opts["--json"], "w") as f:
        json.dump(result, f, indent=2)
        f.write("\n")
    print(md)


def min_or_none(*values):
    vals = [v for v in values if v is not None]
    return min(vals) if len(vals) == len(values) else None


def main():
    if len(sys.argv) < 2:
        fail(__doc__)
    cmd, args = sys.argv[1], sys.argv[2:]
    if cmd == "iperf" and len(args) == 1:
        cmd_iperf(args[0])
    elif cmd == "ping" and len(args) == 1:
        cmd_ping(args[0])
    elif cmd == "cpu" and args:
        cmd_cpu(args)
    elif cmd == "report":
        cmd_report(args)
    else:
        fail(__doc__)


if __name__ == "__main__":
    os.umask(0o022)
    main()
