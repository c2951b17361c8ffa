#!/usr/bin/env python3
"""Turns the JSON lines written by scripts/bench.sh into the markdown tables of BENCHMARKS.md.

Usage: bench_tables.py RESULTS.jsonl BENCHMARKS.md
The tables replace the text between <!-- results:start --> and <!-- results:end -->.
"""
import json
import statistics
import sys
from collections import defaultdict

results_path, doc_path = sys.argv[1], sys.argv[2]
rows = defaultdict(list)
mode = "full" if results_path.endswith("full.jsonl") else "short"
for line in open(results_path):
    line = line.strip()
    if line:
        r = json.loads(line)
        rows[(r["case"], r["server"])].append(r["result"])


def values(case, server, key):
    """Every run's value of a dotted key, for one case and server."""
    vals = []
    for r in rows.get((case, server), []):
        v = r
        for k in key.split("."):
            v = v.get(k) if isinstance(v, dict) else None
        if isinstance(v, (int, float)):
            vals.append(v)
    return vals


def spread(case, server, key, fmt="{:,.0f}"):
    vals = values(case, server, key)
    if not vals:
        return "–"
    if len(vals) == 1:
        return fmt.format(vals[0])
    return "{} – {} – {}".format(fmt.format(min(vals)), fmt.format(statistics.median(vals)), fmt.format(max(vals)))


def median(case, server, key):
    vals = values(case, server, key)
    return statistics.median(vals) if vals else None


def losses(case, server):
    rs = rows.get((case, server), [])
    if not rs:
        return "–"
    return str(sum(r.get("lost", 0) + r.get("duplicated", 0) + r.get("reordered", 0) for r in rs))


ms = "{:.2f}"
out = []
runs = max((len(v) for v in rows.values()), default=0)
out.append(f"Mode `{mode}`; {runs} run(s) per case, each case run on Herald, the ceiling and Nchan in turn before the next; where there are several runs, cells show min – median – max.\n")

out.append("### Latency: 1,000 subscribers, one channel, 50 msg/s, 100-byte payloads\n")
out.append("| transport | Herald p50 ms | Herald p99 ms | Herald max ms | ceiling p99 ms | Nchan p99 ms | Herald lost+dup+reordered |")
out.append("|---|---|---|---|---|---|---|")
for t in ("ws", "sse"):
    c = f"latency-1k-50hz-{t}"
    out.append(f"| {t} | {spread(c,'herald','latency.p50_ms',ms)} | {spread(c,'herald','latency.p99_ms',ms)} | {spread(c,'herald','latency.max_ms',ms)} | {spread(c,'ceiling','latency.p99_ms',ms)} | {spread(c,'nchan','latency.p99_ms',ms)} | {losses(c,'herald')} |")

sat = [k for k in {c for c, _ in rows} if k.startswith("saturation-")]
subs = sat[0].split("-")[1] if sat else "10000"
out.append(f"\n### Saturation: {int(subs):,} subscribers, one channel, 100-byte payloads, published as fast as accepted\n")
out.append("| transport | Herald msg/s | ceiling msg/s | Herald / ceiling | Nchan msg/s | Herald p99 ms | Herald server CPU s | generator CPU s | Herald lost+dup+reordered |")
out.append("|---|---|---|---|---|---|---|---|---|")
for t in ("ws", "sse"):
    c = f"saturation-{subs}-{t}"
    h, ce = median(c, "herald", "delivered_per_sec"), median(c, "ceiling", "delivered_per_sec")
    frac = f"{100*h/ce:.0f}%" if h and ce else "–"
    out.append(f"| {t} | {spread(c,'herald','delivered_per_sec')} | {spread(c,'ceiling','delivered_per_sec')} | {frac} | {spread(c,'nchan','delivered_per_sec')} | {spread(c,'herald','latency.p99_ms',ms)} | {spread(c,'herald','server_cpu_seconds','{:.1f}')} | {spread(c,'herald','generator_cpu_seconds','{:.1f}')} | {losses(c,'herald')} |")

idle = sorted({c for c, _ in rows if c.startswith("idle-")})
out.append("\n### Idle connections: server RSS per connection\n")
out.append("| case | Herald bytes/conn | Nchan bytes/conn | Herald connected / held |")
out.append("|---|---|---|---|")
for c in idle:
    rs = rows.get((c, "herald"), [])
    held = ", ".join(f"{r.get('connected')}/{r.get('still_open_after_hold')}" for r in rs) or "–"
    out.append(f"| {c} | {spread(c,'herald','server_rss_per_connection_bytes')} | {spread(c,'nchan','server_rss_per_connection_bytes')} | {held} |")

out.append("\n### HTTP publish and connection rate\n")
out.append("| case | Herald | Nchan | Herald p99 ms |")
out.append("|---|---|---|---|")
out.append(f"| publishes/s, 32 keep-alive clients | {spread('publish-32','herald','publishes_per_sec')} | {spread('publish-32','nchan','publishes_per_sec')} | {spread('publish-32','herald','latency.p99_ms',ms)} |")
out.append(f"| WebSocket connects/s (5,000) | {spread('connect-5000-ws','herald','connects_per_sec')} | – | – |")

scale = sorted({c for c, _ in rows if c.startswith("scale-")}, key=lambda c: (int(c.split("-")[1]), int(c.split("-")[2][:-1]), int(c.split("-")[3][:-2])))
out.append("\n### Scaling (WebSocket, published as fast as accepted; Nchan one run per case)\n")
out.append("| subscribers | payload | channels | Herald msg/s | ceiling msg/s | Herald / ceiling | Nchan msg/s | Herald p99 ms | Herald lost+dup+reordered |")
out.append("|---|---|---|---|---|---|---|---|---|")
for c in scale:
    _, n, size, ch, _t = c.split("-")
    h, ce = median(c, "herald", "delivered_per_sec"), median(c, "ceiling", "delivered_per_sec")
    frac = f"{100*h/ce:.0f}%" if h and ce else "–"
    out.append(f"| {int(n):,} | {size} | {ch[:-2]} | {spread(c,'herald','delivered_per_sec')} | {spread(c,'ceiling','delivered_per_sec')} | {frac} | {spread(c,'nchan','delivered_per_sec')} | {spread(c,'herald','latency.p99_ms',ms)} | {losses(c,'herald')} |")

table = "\n".join(out) + "\n"
doc = open(doc_path).read()
start, end = "<!-- results:start -->", "<!-- results:end -->"
if start in doc and end in doc:
    head, rest = doc.split(start, 1)
    _, tail = rest.split(end, 1)
    doc = head + start + "\n" + table + end + tail
else:
    doc += "\n" + start + "\n" + table + end + "\n"
open(doc_path, "w").write(doc)
print(table)
