"""Start-up benchmarks (seconds, measured in one run beside the interpreter's own start):

- ``python_pass_s``: ``python -c pass``, what any command costs before it does anything;
- ``import_s``: ``python -c "import calliope_graph"``;
- ``validate_s``: ``calliope-graph validate webcam_story`` (its console script);
- ``import_net_s``, ``validate_net_s``: the same less ``python_pass_s``: what the package adds;
- ``cpu``: the same three as CPU seconds (user + system) of the process, which a busy machine
  disturbs less than wall time.

Each is the median of ``RUNS`` fresh processes, started in turn (pass, import, validate, pass,
…) so the machine's drift hits all three alike, from a temporary folder, as a user's shell.
"""

from __future__ import annotations

import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

RUNS = 7


def _commands() -> dict[str, list[str]]:
    script = Path(sys.executable).with_name("calliope-graph")
    validate = (
        [str(script)]
        if script.exists()
        else [sys.executable, "-c", "from calliope_graph.cli import main; main()"]
    )
    return {
        "python_pass_s": [sys.executable, "-c", "pass"],
        "import_s": [sys.executable, "-c", "import calliope_graph"],
        "validate_s": [*validate, "validate", "webcam_story"],
    }


def _seconds(command: list[str], cwd: str) -> tuple[float, float]:
    """Wall and CPU seconds of one run of ``command``."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run(command, cwd=cwd, check=True, capture_output=True)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
    return wall, cpu


def run(runs: int = RUNS) -> dict[str, Any]:
    commands = _commands()
    walls: dict[str, list[float]] = {name: [] for name in commands}
    cpus: dict[str, list[float]] = {name: [] for name in commands}
    with tempfile.TemporaryDirectory() as cwd:
        for command in commands.values():  # warm the file cache once
            _seconds(command, cwd)
        for _ in range(runs):
            for name, command in commands.items():
                wall, cpu = _seconds(command, cwd)
                walls[name].append(wall)
                cpus[name].append(cpu)
    medians = {name: statistics.median(values) for name, values in walls.items()}
    bare = medians["python_pass_s"]
    return {
        "startup": {
            "runs": runs,
            **{name: round(value, 4) for name, value in medians.items()},
            "import_net_s": round(medians["import_s"] - bare, 4),
            "validate_net_s": round(medians["validate_s"] - bare, 4),
            "cpu": {name: round(statistics.median(cpus[name]), 4) for name in commands},
        }
    }


if __name__ == "__main__":
    import json

    print(json.dumps(run(), indent=2))
