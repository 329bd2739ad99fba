#!/usr/bin/env python3
"""Plots what benches/compare.py measured, from the JSON files in a results directory. Needs
matplotlib (compare.py installs it into a venv cache and runs this).

    plot.py benches/results

Draws, each when its data is there:
  - throughput.png: throughput and server CPU per request by mix and server (compare.json);
  - latency.png: p50 and p99 latency against offered load, sidecar and bare hyper
    (compare.json, "latency_vs_load");
  - memory.png: resident set growth and weighed bytes against cached entries, unbounded and
    with the default 64 MiB budget (memory.json, memory-budget.json).
"""

import json
import os
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

MIB = 1024 * 1024


def throughput(results, target):
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


def latency(results, target):
    points = results["latency_vs_load"]
    figure, axes = plt.subplots(figsize=(8, 5))
    for server, style in (("sidecar", "-o"), ("bare hyper", "--s")):
        mine = sorted((p for p in points if p["server"] == server), key=lambda p: p["rate"])
        rates = [p["rate"] / 1000 for p in mine]
        for key, label in (("p50_us", "p50"), ("p99_us", "p99")):
            axes.plot(rates, [p[key] / 1000 for p in mine], style,
                      label=f"{server} {label}", alpha=1.0 if label == "p99" else 0.6)
    axes.axhline(1.0, color="grey", linewidth=0.8, linestyle=":")
    axes.text(0.02, 1.02, "SPEC §8: p99 < 1 ms at half load", transform=axes.get_yaxis_transform(),
              fontsize=8, color="grey")
    axes.set_yscale("log")
    axes.set_xlabel("offered load (thousand requests/s, paced, open loop)")
    axes.set_ylabel("latency from the scheduled time (ms)")
    axes.set_title(f"Latency against offered load, {results['date']} "
                   "(server on one core, generator on the other)")
    axes.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(target, dpi=90)


def resident_and_weighed(axes, points, x_key):
    """The resident set growth and what the cache weighed, against `x_key`, in MiB."""
    xs = [p[x_key] / 1000 for p in points]
    axes.plot(xs, [p["rss_growth_bytes"] / MIB for p in points], "-o",
              label="resident set growth")
    axes.plot(xs, [p["weighted_bytes"] / MIB for p in points], "--",
              label="weighed by the cache")


def memory(unbounded, budget, target):
    figure, (left, right) = plt.subplots(1, 2, figsize=(14, 5))
    if unbounded:
        resident_and_weighed(left, unbounded["points"], "entries")
        left.axhline(512, color="grey", linewidth=0.8, linestyle=":")
        left.text(5, 520, "SPEC §8: 1,000,000 under 512 MiB", fontsize=8, color="grey")
        left.set_xlabel("cached session grants (thousands)")
        left.set_ylabel("MiB")
        left.set_title("Unbounded cache: memory against cached entries")
        left.legend(fontsize=8)
    if budget:
        resident_and_weighed(right, budget["points"], "verified")
        mib = budget["budget_mib"]
        right.axhspan(mib * 0.9, mib * 1.1, color="green", alpha=0.1,
                      label=f"{mib} MiB ± 10 %")
        right.set_ylim(0, mib * 1.5)
        right.set_xlabel("distinct session tokens verified (thousands)")
        right.set_ylabel("MiB")
        right.set_title(f"--cache-max-bytes {mib} MiB: memory as tokens keep coming")
        right.legend(fontsize=8)
    figure.suptitle("cargo bench --bench memory (in process, one answer per grant)")
    figure.tight_layout()
    figure.savefig(target, dpi=90)


def load(directory, name):
    path = os.path.join(directory, name)
    return json.load(open(path)) if os.path.exists(path) else None


def main():
    directory = sys.argv[1]
    results = load(directory, "compare.json")
    if results:
        throughput(results, os.path.join(directory, "throughput.png"))
        if results.get("latency_vs_load"):
            latency(results, os.path.join(directory, "latency.png"))
    unbounded, budget = load(directory, "memory.json"), load(directory, "memory-budget.json")
    if unbounded or budget:
        memory(unbounded, budget, os.path.join(directory, "memory.png"))
    print(f"plots in {directory}")


if __name__ == "__main__":
    main()
