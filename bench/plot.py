"""Latency percentiles against offered load for B3 and B5, from the result files of
scripts/bench.sh (keys `b3.sweep.<rate>`, `b5.sweep.<rate>`, `base-fanout.<server>.sweep.<rate>`).

    python plot.py RESULTS_DIR OUT_DIR
"""
import glob
import json
import os
import re
import statistics
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def load(results, prefix):
    """{offered rate: [run, ...]} for keys `<prefix>.<rate>`."""
    runs = {}
    for path in glob.glob(os.path.join(results, prefix + ".*.json")):
        m = re.match(re.escape(prefix) + r"\.([0-9.]+)\.r\d+\.json$", os.path.basename(path))
        if m:
            with open(path) as f:
                runs.setdefault(float(m.group(1)), []).append(json.load(f))
    return dict(sorted(runs.items()))


def series(runs, hist, q):
    xs, ys = [], []
    for rate, rs in runs.items():
        vals = [r[hist][q] for r in rs if r.get(hist, {}).get("count", 0) > 0]
        if vals:
            xs.append(rate)
            ys.append(statistics.median(vals))
    return xs, ys


def plot(ax, runs, hist, label, style="-"):
    for q, marker in [("p50_ms", "o"), ("p90_ms", "s"), ("p99_ms", "^"), ("p999_ms", "v")]:
        xs, ys = series(runs, hist, q)
        if xs:
            ax.plot(xs, ys, style, marker=marker, label=f"{label} {q[:-3]}")


def main():
    results, out = sys.argv[1], sys.argv[2]
    os.makedirs(out, exist_ok=True)

    b3 = load(results, "b3.sweep")
    if b3:
        fig, ax = plt.subplots(figsize=(8, 5))
        plot(ax, b3, "push", "gim send→push")
        ax.axhline(50, color="grey", linestyle=":", label="goal p99 50 ms")
        ax.set_xlabel("offered load (messages/s)")
        ax.set_ylabel("latency (ms, log)")
        ax.set_yscale("log")
        ax.set_title("B3 1:1 persisted messages: latency from scheduled send")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(os.path.join(out, "b3.png"), dpi=110)

    b5 = load(results, "b5.sweep")
    if b5:
        fig, ax = plt.subplots(figsize=(8, 5))
        plot(ax, b5, "last_recipient", "gim last recipient")
        for server, style in [("rust", "--"), ("node", ":")]:
            base = load(results, f"base-fanout.{server}.sweep")
            for q, marker in [("p50_ms", "o"), ("p99_ms", "^")]:
                xs, ys = series(base, "last_recipient", q)
                if xs:
                    ax.plot(xs, ys, style, marker=marker, label=f"{server} baseline last recipient {q[:-3]}")
        ax.axhline(300, color="grey", linestyle=":", label="goal p99 300 ms")
        ax.set_xlabel("offered load (messages/s to the group)")
        ax.set_ylabel("latency (ms, log)")
        ax.set_yscale("log")
        ax.set_title("B5 large group fan-out: send → last recipient")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(os.path.join(out, "b5.png"), dpi=110)


if __name__ == "__main__":
    main()
