#!/usr/bin/env python3
"""Plots a gridwatch-load sweep (the CSV written with --csv) as a PNG for docs/BENCHMARKS.md.

    pip install matplotlib
    python3 scripts/plot-load.py sweep.csv docs/load-sweep.png
"""
import csv
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def main(source: str, target: str) -> None:
    with open(source, newline="") as handle:
        rows = list(csv.DictReader(handle))
    by_sensors: dict[int, list[dict]] = {}
    for row in rows:
        by_sensors.setdefault(int(row["sensors"]), []).append(row)
    figure, (rate_axis, latency_axis) = plt.subplots(1, 2, figsize=(11, 4.2))
    for sensors, runs in sorted(by_sensors.items()):
        runs.sort(key=lambda r: float(r["broker_per_sec"]))
        broker = [float(r["broker_per_sec"]) for r in runs]
        daemon = [float(r["daemon_per_sec"]) for r in runs]
        p99 = [float(r["latency_p99_ms"]) for r in runs]
        rate_axis.plot(broker, daemon, marker="o", label=f"{sensors} sensors")
        latency_axis.plot(daemon, p99, marker="o", label=f"{sensors} sensors")
    top = max(float(r["broker_per_sec"]) for r in rows)
    rate_axis.plot([0, top], [0, top], linestyle=":", color="grey", label="= broker")
    rate_axis.set_xlabel("mosquitto_sub readings/s (the broker's own delivery)")
    rate_axis.set_ylabel("gridwatch readings/s evaluated")
    rate_axis.set_title("Throughput against the broker")
    latency_axis.set_xlabel("gridwatch readings/s")
    latency_axis.set_ylabel("alert latency p99, publish -> webhook (ms)")
    latency_axis.set_yscale("log")
    latency_axis.set_title("Alert latency")
    for axis in (rate_axis, latency_axis):
        axis.grid(True, alpha=0.3)
        axis.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(target, dpi=110)


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    main(sys.argv[1], sys.argv[2])
