"""What every benchmark shares: log lines on stderr and the machine description of the JSON line."""

from __future__ import annotations

import json
import os
import platform
import sys
from pathlib import Path


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def cpu_model() -> str:
    try:
        with Path("/proc/cpuinfo").open() as info:
            for line in info:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine() -> dict[str, object]:
    """The ``machine`` object of a benchmark's JSON line (CONVENTIONS): CPU model, cores, GPU (none here)."""
    return {"cpu": cpu_model(), "cores": os.cpu_count(), "gpu": None}


def log_bars(benchmark: str, bars: dict) -> None:
    """One stderr line per bar: its value, its limit and whether it holds."""
    for name, bar in bars.items():
        log(f"{benchmark}: bar {name}: {bar['value']} (limit {bar['limit']}) {'ok' if bar['ok'] else 'FAILED'}")


def emit(benchmark: str, figures: dict, bars: dict, notes: str, details: dict | None = None) -> None:
    """Print the benchmark's one JSON line on stdout (CONVENTIONS: benchmark, machine, figures, bars, notes)."""
    report: dict[str, object] = {"benchmark": benchmark, "machine": machine(), "figures": figures, "bars": bars}
    if details is not None:
        report["details"] = details
    report["notes"] = notes
    print(json.dumps(report))
