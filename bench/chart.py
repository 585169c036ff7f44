#!/usr/bin/env python3
"""Draws memory.tsv (from bench/run) as an SVG: RSS and /metrics p99 latency against the
number of accounts, log-scaled x axis, one y axis each. No third-party modules."""
import math
import sys

rows = [line.rstrip("\n").split("\t") for line in open(sys.argv[1])][1:]
accounts = [int(r[0]) for r in rows]
rss = [float(r[2]) for r in rows]
# VmHWM (peak), drawn dashed beside RSS where memory.tsv has it.
hwm = [float(r[5]) for r in rows] if rows and len(rows[0]) > 5 else []
p99 = [float(r[4]) for r in rows]

W, H, L, R, T, B = 640, 400, 70, 70, 40, 60
xmin, xmax = math.log10(min(accounts)), math.log10(max(accounts))
xmax = xmax if xmax > xmin else xmin + 1


def x(n):
    return L + (math.log10(n) - xmin) / (xmax - xmin) * (W - L - R)


def nice_max(v):
    if v <= 0:
        return 1
    step = 10 ** math.floor(math.log10(v))
    return math.ceil(v / step) * step


def y(v, top):
    return H - B - v / top * (H - T - B)


rss_top, p99_top = nice_max(max(rss + hwm) * 1.1), nice_max(max(p99) * 1.1)
out = [
    f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" font-family="sans-serif" font-size="12">',
    f'<rect width="{W}" height="{H}" fill="white"/>',
    f'<text x="{W / 2}" y="20" text-anchor="middle" font-size="14">balance_exporter: RSS (peak dashed) and /metrics p99 (gzip) vs accounts</text>',
    f'<line x1="{L}" y1="{H - B}" x2="{W - R}" y2="{H - B}" stroke="black"/>',
    f'<line x1="{L}" y1="{T}" x2="{L}" y2="{H - B}" stroke="#1f77b4"/>',
    f'<line x1="{W - R}" y1="{T}" x2="{W - R}" y2="{H - B}" stroke="#d62728"/>',
]
for n in accounts:
    out.append(f'<line x1="{x(n):.1f}" y1="{H - B}" x2="{x(n):.1f}" y2="{H - B + 5}" stroke="black"/>')
    out.append(f'<text x="{x(n):.1f}" y="{H - B + 20}" text-anchor="middle">{n:,}</text>')
out.append(f'<text x="{(L + W - R) / 2}" y="{H - 15}" text-anchor="middle">accounts (3 currencies x 6 kinds each, log scale)</text>')
for i in range(6):
    v1, v2 = rss_top * i / 5, p99_top * i / 5
    yy = y(v1, rss_top)
    out.append(f'<line x1="{L}" y1="{yy:.1f}" x2="{W - R}" y2="{yy:.1f}" stroke="#eee"/>')
    out.append(f'<text x="{L - 6}" y="{yy + 4:.1f}" text-anchor="end" fill="#1f77b4">{v1:g}</text>')
    out.append(f'<text x="{W - R + 6}" y="{yy + 4:.1f}" fill="#d62728">{v2:g}</text>')
out.append(f'<text transform="translate(18,{(T + H - B) / 2}) rotate(-90)" text-anchor="middle" fill="#1f77b4">RSS (MiB)</text>')
out.append(f'<text transform="translate({W - 15},{(T + H - B) / 2}) rotate(90)" text-anchor="middle" fill="#d62728">/metrics p99 (ms)</text>')
for values, top, color in [(rss, rss_top, "#1f77b4"), (p99, p99_top, "#d62728")]:
    points = " ".join(f"{x(n):.1f},{y(v, top):.1f}" for n, v in zip(accounts, values))
    out.append(f'<polyline points="{points}" fill="none" stroke="{color}" stroke-width="2"/>')
    for n, v in zip(accounts, values):
        out.append(f'<circle cx="{x(n):.1f}" cy="{y(v, top):.1f}" r="3.5" fill="{color}"/>')
if hwm:
    points = " ".join(f"{x(n):.1f},{y(v, rss_top):.1f}" for n, v in zip(accounts, hwm))
    out.append(f'<polyline points="{points}" fill="none" stroke="#1f77b4" stroke-width="1.5" stroke-dasharray="5,4"/>')
out.append("</svg>")
open(sys.argv[2], "w").write("\n".join(out) + "\n")
