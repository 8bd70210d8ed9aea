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
    "twoway": "twoway (transport auto)",
    "twoway-tcp": "twoway, transport = tcp",
    "openvpn-tcp": "OpenVPN 2.6, TCP",
    "openvpn-udp": "OpenVPN 2.6, UDP",
}
LINK_TITLES = {
    "clean": "Clean link",
    "lossy": "Lossy link",
    "wan": "Lossy WAN",
}
UDP_PEERS = ("openvpn-udp",)
# What issue 6 asks of twoway on the clean link, in the same run.
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
    links = [s for s in meta.get("links", "clean").split(",") if s]
    reps = int(meta.get("reps", "0"))

    # raw[link][system][key] = [value per rep or None]; errors: list of dicts
    raw = {link: {s: {} for s in systems} for link in links}
    errors = []
    for row in read_tsv(opts["--records"]):
        link, rep, system, key = row[0], int(row[1]), row[2], row[3]
        value = "\t".join(row[4:])
        if key == "error":
            errors.append({"link": link, "rep": rep, "system": system, "message": value})
            continue
        series = raw.setdefault(link, {}).setdefault(system, {}).setdefault(key, [None] * reps)
        series[rep - 1] = num(value) if num(value) is not None else value

    medians = {}
    for link, per_system in raw.items():
        medians[link] = {}
        for system, metrics in per_system.items():
            medians[link][system] = {}
            for key, series in metrics.items():
                if any(isinstance(v, str) for v in series):
                    continue  # a label such as route_dev or transport
                vals = [v for v in series if v is not None]
                medians[link][system][key] = statistics.median(vals) if vals else None

    def med(link, system, key):
        return medians.get(link, {}).get(system, {}).get(key)

    def transports(link, system):
        """The transports twoway reported, e.g. "udp" or "udp -> tcp"."""
        seen = []
        for rep in range(reps):
            pair = []
            for when in ("start", "end"):
                series = raw.get(link, {}).get(system, {}).get(f"transport_{when}") or []
                v = series[rep] if rep < len(series) else None
                if v is not None:
                    pair.append(str(v))
            if pair:
                text = pair[0] if len(set(pair)) == 1 else " -> ".join(pair)
                if text not in seen:
                    seen.append(text)
        if not seen:
            return "tcp" if system == "openvpn-tcp" else ("udp" if system == "openvpn-udp" else "-")
        return ", ".join(seen)

    # Ratios for twoway on the clean link, from the medians.
    ratios = {}
    if "clean" in links:
        for d, key in (("up", "up1_mbps"), ("down", "down1_mbps")):
            tw, ov, pl = med("clean", "twoway", key), med("clean", "openvpn-tcp", key), med("clean", "plain", key)
            ratios[f"{d}_vs_openvpn_x"] = tw / ov if tw and ov else None
            ratios[f"{d}_vs_plain_pct"] = 100.0 * tw / pl if tw and pl else None

    lines = []
    lines.append("## twoway benchmark")
    lines.append("")
    lines.append(f"- machine: {meta.get('nproc', '?')} CPUs, {meta.get('cpu_model', '?')}, "
                 f"kernel {meta.get('kernel', '?')}")
    lines.append(f"- date: {meta.get('date', '?')}")
    if "twoway" in systems or "twoway-tcp" in systems:
        lines.append(f"- twoway: {meta.get('twoway_rev', '?')}; server log: {meta.get('twoway_session', '?')}")
    lines.append(f"- method: {reps} interleaved repetition(s) per link (each VPN freshly started), "
                 f"medians; iperf3 {meta.get('secs', '?')} s per run, {meta.get('iperf3', '?')}, "
                 f"TCP congestion control in the namespaces: {meta.get('tcp_cc', '?')}; "
                 f"ping {meta.get('ping_count', '?')} x 0.1 s cli -> lan; "
                 f"CPU = utime+stime of the VPN server and client processes {meta.get('cpu_basis', '')}")
    if "lossy" in links or "wan" in links:
        lines.append("- lossy and WAN links: 1-stream down, then a 1-stream upload of "
                     f"{meta.get('load_secs', '?')} s with the pings beside it (its throughput is the upload)")
    if "lossy" in links:
        lines.append(f"- lossy link: {meta.get('lossy_link', '?')}")
    if "wan" in links:
        lines.append(f"- WAN link: {meta.get('wan_link', '?')}")
    if "openvpn-tcp" in systems or "openvpn-udp" in systems:
        lines.append(f"- OpenVPN: {meta.get('openvpn_version', '?')}; options: {meta.get('openvpn_options', '?')}; "
                     f"negotiated: {meta.get('openvpn_session', '?')}")
    lines.append("")

    goals12 = []

    def goal(label, value, ok, into):
        mark = "n.a." if value is None else ("met" if ok(value) else "NOT met")
        into.append(f"{label}: {mark}")

    for link in links:
        lines.append(f"### {LINK_TITLES.get(link, link)}")
        lines.append("")
        if link == "clean":
            lines.append("| system | transport | 1-stream up | 4-stream up | 1-stream down | ping idle avg / p99 "
                         "| ping load avg / p99 | CPU s/GB |")
            lines.append("|---|---|---:|---:|---:|---:|---:|---:|")
            lines.append("| | | Mbit/s | Mbit/s | Mbit/s | ms | ms | VPN processes |")
        else:
            lines.append("| system | transport | 1-stream up | 1-stream down | ping during the upload avg / p99 "
                         "| pings lost |")
            lines.append("|---|---|---:|---:|---:|---:|")
            lines.append("| | | Mbit/s | Mbit/s | ms | of " + str(meta.get("ping_count", "?")) + " |")
        for system in systems:
            cells = [SYSTEM_NAMES.get(system, system), transports(link, system) if system != "plain" else "-"]
            if link == "clean":
                for key, _ in THROUGHPUT:
                    cells.append(fmt(med(link, system, key)))
                for kind in ("idle", "load"):
                    a, p = med(link, system, f"ping_{kind}_avg"), med(link, system, f"ping_{kind}_p99")
                    cells.append(f"{fmt(a, 2)} / {fmt(p, 2)}")
                cells.append("n.a." if system == "plain" else fmt(med(link, system, "cpu_s_per_gb"), 1))
            else:
                cells.append(fmt(med(link, system, "up1_mbps")))
                cells.append(fmt(med(link, system, "down1_mbps")))
                a, p = med(link, system, "ping_load_avg"), med(link, system, "ping_load_p99")
                cells.append(f"{fmt(a, 2)} / {fmt(p, 2)}")
                cells.append(fmt(med(link, system, "ping_load_lost")))
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")

        if link == "clean" and "twoway" in systems:
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
            if "openvpn-tcp" in systems:
                goal("up/down >= 15x OpenVPN-TCP",
                     min_or_none(ratios["up_vs_openvpn_x"], ratios["down_vs_openvpn_x"]),
                     lambda v: v >= GOALS["vs_openvpn_x"], goal_parts)
            goal("CPU <= 2 s/GB", med(link, "twoway", "cpu_s_per_gb"),
                 lambda v: v <= GOALS["cpu_s_per_gb"], goal_parts)
            lines.append("Issue 6 goals for twoway: " + "; ".join(goal_parts) + ".")
            lines.append("")
            if "plain" in systems:
                goal("clean: up/down >= 35 % of plain",
                     min_or_none(ratios["up_vs_plain_pct"], ratios["down_vs_plain_pct"]),
                     lambda v: v >= GOALS["vs_plain_pct"], goals12)
            goal("clean: ping p99 under load <= 5 ms", med(link, "twoway", "ping_load_p99"),
                 lambda v: v <= GOALS["ping_load_p99_ms"], goals12)

        peers = [p for p in UDP_PEERS if p in systems]
        best_up = max_or_none([med(link, p, "up1_mbps") for p in peers]) if peers else None
        peer_p99 = [med(link, p, "ping_load_p99") for p in peers]
        tw_up, tw_p99 = med(link, "twoway", "up1_mbps"), med(link, "twoway", "ping_load_p99")
        if link == "lossy" and "twoway" in systems:
            goal("lossy: ping p99 during the upload <= 4 ms", tw_p99, lambda v: v <= 4.0, goals12)
            if peers:
                goal("lossy: upload >= 2x the best UDP peer",
                     tw_up / best_up if tw_up and best_up else None, lambda v: v >= 2.0, goals12)
        if link == "wan" and "twoway" in systems:
            rtt = 2.0 * float(meta.get("wan_delay_ms", "15"))
            goal(f"wan: ping p99 during the upload <= RTT + 10 ms ({rtt + 10:.0f})", tw_p99,
                 lambda v: v <= rtt + 10.0, goals12)
            if peers:
                goal("wan: upload >= the best UDP peer",
                     tw_up / best_up if tw_up and best_up else None, lambda v: v >= 1.0, goals12)
                goal("wan: ping p99 no higher than any UDP peer's",
                     tw_p99 if None not in peer_p99 else None, lambda v: v <= min(peer_p99), goals12)
        if link == "wan" and "twoway-tcp" in systems and "openvpn-tcp" in systems:
            t_up, o_up = med(link, "twoway-tcp", "up1_mbps"), med(link, "openvpn-tcp", "up1_mbps")
            t_p, o_p = med(link, "twoway-tcp", "ping_load_p99"), med(link, "openvpn-tcp", "ping_load_p99")
            goal("wan, transport = tcp: upload >= OpenVPN-TCP's",
                 t_up / o_up if t_up and o_up else None, lambda v: v >= 1.0, goals12)
            goal("wan, transport = tcp: ping p99 <= OpenVPN-TCP's",
                 t_p - o_p if t_p is not None and o_p is not None else None, lambda v: v <= 0.0, goals12)

    if goals12:
        lines.append("**Issue 12 goals (medians of this run):** " + "; ".join(goals12) + ".")
        lines.append("")

    if errors:
        lines.append("**Failed steps** (their values are missing from the medians):")
        lines.append("")
        for e in errors:
            lines.append(f"- {e['link']} link, rep {e['rep']}, {e['system']}: {e['message']}")
        lines.append("")

    md = "\n".join(lines)
    wan_stats = None
    if meta.get("wan_bridge_stats"):
        try:
            wan_stats = json.loads(meta["wan_bridge_stats"])
        except ValueError:
            wan_stats = meta["wan_bridge_stats"]
    result = {
        "machine": {k: meta.get(k) for k in ("nproc", "cpu_model", "kernel", "date", "hostname")},
        "settings": {k: (int(v) if v.isdigit() else v) for k, v in meta.items()
                     if k not in ("nproc", "cpu_model", "kernel", "date", "hostname", "wan_bridge_stats")},
        "units": {"*_mbps": "Mbit/s (iperf3 receiver)", "*_bytes": "bytes", "ping_*": "ms",
                  "ping_*_lost": "pings without a reply",
                  "transport_start/end": "what `twoway status --json` reported after the start and at the end",
                  "cpu_s": "CPU seconds (utime+stime) of the VPN processes during the CPU run",
                  "cpu_s_per_gb": "CPU seconds per 1e9 bytes received"},
        "links": links,
        "raw": raw,
        "medians": medians,
        "transports": {link: {s: transports(link, s) for s in systems if s.startswith("twoway")} for link in links},
        "ratios_clean": ratios,
        "issue12_goals": goals12,
        "wan_bridge": wan_stats,
        "errors": errors,
    }
    with open(opts["--md"], "w") as f:
        f.write(md + "\n")
    with open(opts["--json"], "w") as f:
        json.dump(result, f, indent=2)
        f.write("\n")
    print(md)


def max_or_none(values):
    vals = [v for v in values if v is not None]
    return max(vals) if len(vals) == len(values) and vals else None


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
