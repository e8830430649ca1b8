#!/usr/bin/env python3
"""Writes a line plot as SVG from "x y" lines on stdin (standard library only).

  plot_svg.py --title T --x-label X --y-label Y [--y-from-zero] > plot.svg

Used by scripts/bench.sh for the soak's RSS curve and the latency-throughput curves.
"""
import argparse, sys
from xml.sax.saxutils import escape

W, H, LEFT, RIGHT, TOP, BOTTOM = 640, 360, 70, 20, 40, 50


def ticks(lo, hi, n=5):
    step = (hi - lo) / n if hi > lo else 1
    return [lo + i * step for i in range(n + 1)]


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--title", required=True)
    p.add_argument("--x-label", required=True)
    p.add_argument("--y-label", required=True)
    p.add_argument("--y-from-zero", action="store_true")
    a = p.parse_args()
    points = [tuple(float(v) for v in line.split()[:2]) for line in sys.stdin if line.strip()]
    if not points:
        sys.exit("no points")
    xs, ys = [x for x, _ in points], [y for _, y in points]
    x0, x1 = min(xs), max(xs)
    y0, y1 = (0 if a.y_from_zero else min(ys)), max(ys)
    if x1 == x0:
        x1 = x0 + 1
    if y1 == y0:
        y1 = y0 + 1
    y1 += (y1 - y0) * 0.1
    sx = lambda x: LEFT + (x - x0) / (x1 - x0) * (W - LEFT - RIGHT)
    sy = lambda y: H - BOTTOM - (y - y0) / (y1 - y0) * (H - TOP - BOTTOM)
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" font-family="sans-serif" font-size="12">',
           f'<rect width="{W}" height="{H}" fill="white"/>',
           f'<text x="{W / 2}" y="20" text-anchor="middle" font-size="14">{escape(a.title)}</text>']
    for t in ticks(x0, x1):
        out.append(f'<line x1="{sx(t):.1f}" y1="{H - BOTTOM}" x2="{sx(t):.1f}" y2="{TOP}" stroke="#eee"/>')
        out.append(f'<text x="{sx(t):.1f}" y="{H - BOTTOM + 16}" text-anchor="middle">{t:.3g}</text>')
    for t in ticks(y0, y1):
        out.append(f'<line x1="{LEFT}" y1="{sy(t):.1f}" x2="{W - RIGHT}" y2="{sy(t):.1f}" stroke="#eee"/>')
        out.append(f'<text x="{LEFT - 6}" y="{sy(t) + 4:.1f}" text-anchor="end">{t:.4g}</text>')
    out.append(f'<line x1="{LEFT}" y1="{H - BOTTOM}" x2="{W - RIGHT}" y2="{H - BOTTOM}" stroke="black"/>')
    out.append(f'<line x1="{LEFT}" y1="{H - BOTTOM}" x2="{LEFT}" y2="{TOP}" stroke="black"/>')
    path = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in points)
    out.append(f'<polyline points="{path}" fill="none" stroke="#1f77b4" stroke-width="2"/>')
    for x, y in points:
        out.append(f'<circle cx="{sx(x):.1f}" cy="{sy(y):.1f}" r="3" fill="#1f77b4"/>')
    out.append(f'<text x="{(LEFT + W - RIGHT) / 2}" y="{H - 12}" text-anchor="middle">{escape(a.x_label)}</text>')
    out.append(f'<text x="16" y="{(TOP + H - BOTTOM) / 2}" text-anchor="middle" '
               f'transform="rotate(-90 16 {(TOP + H - BOTTOM) / 2})">{escape(a.y_label)}</text>')
    out.append("</svg>")
    print("\n".join(out))


if __name__ == "__main__":
    main()
