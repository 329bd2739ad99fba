#!/usr/bin/env python3
"""Plots what benches/compare.py measured: throughput and server CPU per request by mix and
server, from its JSON. Needs matplotlib (compare.py installs it into a venv cache and runs this).

    plot.py benches/results/compare.json benches/results/throughput.png
"""

import json
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def main():
    source, target = sys.argv[1], sys.argv[2]
    results = json.load(open(source))
    mixes = list(dict.fromkeys(c["mix"] for c in results["cases"]))
    servers = list(dict.fromkeys(c["server"] for c in results["cases"]))
    by = {(c["mix"], c["server"]): c for c in results["cases"]}
    figure, (left, right) = plt.subplots(1, 2, figsize=(14, 5))
    width = 0.8 / len(servers)
    for i, server in enumerate(servers):
        xs = [m + i * width for m in range(len(mixes)) if (mixes[m], server) in by]
        present = [mix for mix in mixes if (mix, server) in by]
        left.bar(xs, [by[(mix, server)]["rps"] / 1000 for mix in present], width, label=server)
        right.bar(xs, [by[(mix, server)]["cpu_ms_per_1000"] for mix in present], width,
                  label=server)
    for axes, title, unit in ((left, "Throughput (median of rounds)", "thousand requests/s"),
                              (right, "Server CPU per 1,000 requests", "ms")):
        axes.set_title(title)
        axes.set_ylabel(unit)
        axes.set_xticks([m + 0.4 - width / 2 for m in range(len(mixes))])
        axes.set_xticklabels(mixes, fontsize=8)
    handles, labels = left.get_legend_handles_labels()
    figure.legend(handles, labels, loc="lower center", ncol=len(servers), fontsize=8)
    figure.suptitle(f"benches/compare.py, {results['date']}: servers on one core, wrk on the "
                    f"other, {results['connections']} connections")
    figure.tight_layout(rect=(0, 0.06, 1, 1))
    figure.savefig(target, dpi=90)


if __name__ == "__main__":
    main()
