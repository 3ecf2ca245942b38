#!/usr/bin/env python3
"""Read a book into memory and ask about it, from Python; then plot what the memory costs against what
full attention would hold as the text grows.

    python examples/read_a_book.py [BOOK.txt] ["question"]

With no arguments it reads the first 16K tokens of a book shipped in data/val/. Needs only the mnemo
package (`pip install .` or `make python`); the plot is written as an SVG file, memory.svg, with no
plotting library (matplotlib draws a nicer one where it is installed: memory.png)."""
import os
import sys

import mnemo

HERE = os.path.dirname(os.path.abspath(__file__))
BOOK = sys.argv[1] if len(sys.argv) > 1 else os.path.join(HERE, "..", "data", "val", "pg1082.txt")
QUESTION = sys.argv[2] if len(sys.argv) > 2 else "Who is the narrator, and where does the story begin?"
LENGTHS = [1024, 2048, 4096, 8192, 16384]  # tokens of the book read, for the plot


def svg_plot(points, path):
    """points: (tokens, memory cells, full attention cells); a two-line chart in plain SVG."""
    w, h, pad = 640, 400, 60
    xmax = max(p[0] for p in points)
    ymax = max(max(p[1], p[2]) for p in points)
    def x(v): return pad + (w - 2 * pad) * v / xmax
    def y(v): return h - pad - (h - 2 * pad) * v / ymax
    out = ['<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" font-family="sans-serif" '
           'font-size="12">' % (w, h), '<rect width="100%" height="100%" fill="white"/>',
           '<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="black"/>' % (pad, h - pad, w - pad, h - pad),
           '<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="black"/>' % (pad, h - pad, pad, pad)]
    for i, (label, color) in enumerate((("memory (KV cells)", "#1f77b4"), ("full attention (KV cells)", "#d62728"))):
        pts = " ".join("%.1f,%.1f" % (x(p[0]), y(p[1 + i])) for p in points)
        out.append('<polyline points="%s" fill="none" stroke="%s" stroke-width="2"/>' % (pts, color))
        out.append('<text x="%d" y="%d" fill="%s">%s</text>' % (pad + 10, pad + 16 * i, color, label))
    for p in points:
        out.append('<text x="%.1f" y="%d" text-anchor="middle">%d</text>' % (x(p[0]), h - pad + 16, p[0]))
    out.append('<text x="%d" y="%d" text-anchor="middle">tokens read</text>' % (w // 2, h - 15))
    for v in (0, ymax // 2, ymax):
        out.append('<text x="%d" y="%.1f" text-anchor="end">%d</text>' % (pad - 5, y(v) + 4, v))
    out.append("</svg>")
    with open(path, "w") as f:
        f.write("\n".join(out))


def main():
    m = mnemo.Model()
    with open(BOOK, encoding="utf-8", errors="replace") as f:
        text = f.read()
    ids = m.tokenize(text)
    points = []
    mem = None
    for n in LENGTHS:
        if n > len(ids):
            break
        part = m.detokenize(ids[:n])
        mem = mnemo.Memory(m, part, progress=False)
        i = mem.info
        points.append((i["tokens"], i["kv_cells"], i["tokens"]))
        print("%6d tokens -> %5d KV cells (%d memory slots + %d raw), %.1fx fewer than full attention"
              % (i["tokens"], i["kv_cells"], i["memory_slots"], i["raw_cells"], i["tokens"] / i["kv_cells"]))
    stats = {}
    print("\nQ:", QUESTION)
    print("A:", mem.ask(QUESTION, max_tokens=64, stats=stats))
    print("(%d segments of the book paged back in for the answer)" % stats["recalled"])
    svg_plot(points, "memory.svg")
    print("\nplot: memory.svg")
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        xs = [p[0] for p in points]
        plt.plot(xs, [p[1] for p in points], "o-", label="memory")
        plt.plot(xs, [p[2] for p in points], "o-", label="full attention")
        plt.xlabel("tokens read"), plt.ylabel("KV cells"), plt.legend()
        plt.savefig("memory.png", dpi=120)
        print("plot: memory.png")
    except ImportError:
        pass


if __name__ == "__main__":
    main()
