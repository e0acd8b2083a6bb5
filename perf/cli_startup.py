"""Start-up time of the `metaaug` command against `python -c "import torch"`.

    python perf/cli_startup.py              # median of 7 round-robin turns
    python perf/cli_startup.py --repeats 15

Each command runs as a fresh process (the installed `metaaug` next to this Python), timed
round-robin so that a drift of the machine hits all alike: wall and CPU time (user + system
of the child). `metaaug --help`, `run --help` and `list` import neither torch nor any policy
(the registries list the built-ins from their sources), so they should cost a fraction of
the torch import; `list policies mixup` shows options from the signature and imports them.
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

METAAUG = str(Path(sys.executable).parent / "metaaug")
COMMANDS = {
    'python -c "import torch"': [sys.executable, "-c", "import torch"],
    'python -c "import metaaugment"': [sys.executable, "-c", "import metaaugment"],
    "metaaug --help": [METAAUG, "--help"],
    "metaaug run --help": [METAAUG, "run", "--help"],
    "metaaug list": [METAAUG, "list"],
    "metaaug --version": [METAAUG, "--version"],
    "metaaug list policies mixup": [METAAUG, "list", "policies", "mixup"],
}


def timed(command: list[str]) -> tuple[float, float]:
    """Wall seconds and CPU seconds (children's user + system) of one run of `command`."""
    before, start = os.times(), time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    wall, after = time.perf_counter() - start, os.times()
    return wall, (after.children_user - before.children_user) + (after.children_system - before.children_system)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    for command in COMMANDS.values():  # warm the file cache
        timed(command)
    samples: dict[str, list[tuple[float, float]]] = {name: [] for name in COMMANDS}
    for _ in range(args.repeats):
        for name, command in COMMANDS.items():
            samples[name].append(timed(command))
    baseline = statistics.median(wall for wall, _ in samples['python -c "import torch"'])
    print(f"median of {args.repeats} turns; ratio: wall time / the torch import's ({baseline:.2f} s)")
    for name, runs in samples.items():
        wall, cpu = statistics.median(w for w, _ in runs), statistics.median(c for _, c in runs)
        print(f"{name:<30} {wall:5.2f} s wall  {cpu:5.2f} s CPU  ratio {wall / baseline:4.2f}")


if __name__ == "__main__":
    main()
