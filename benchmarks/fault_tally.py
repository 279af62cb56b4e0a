"""Tally of the fault-injection tests (tests/test_faults.py): bad inputs tried, tracebacks shown, stray files left.

    python benchmarks/fault_tally.py            # runs the module with pytest -n 2, then prints the tally
    python benchmarks/fault_tally.py -n 0       # in one process

Each case of tests/test_faults.py (a reader that raises or stops early, a full disk mid-file, SIGINT/SIGTERM/SIGKILL
at a random point and the run after it, a folder of frames of mixed sizes, usage errors of the command line and of
the training scripts) appends what it saw to a file before it asserts; the goal is 0 tracebacks and 0 stray files.
The exit status is that of pytest, or 1 when the tally is not clean.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", "--workers", default="2", help="pytest-xdist workers (0: one process; default 2).")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        tally_path = Path(folder) / "tally.jsonl"
        command = [sys.executable, "-m", "pytest", str(REPO / "tests" / "test_faults.py"), "-p", "no:cacheprovider"]
        command += ["-q", "-n", args.workers]
        env = {**os.environ, "NORMALCRAFTER_FAULT_TALLY": str(tally_path)}
        result = subprocess.run(command, cwd=REPO, env=env)
        entries = [json.loads(line) for line in tally_path.read_text().splitlines()] if tally_path.exists() else []
    entries.sort(key=lambda entry: entry["case"])
    width = max((len(entry["case"]) for entry in entries), default=4)
    print(f"\n{'case':<{width}}  exit  tracebacks  stray files")
    for entry in entries:
        stray = ", ".join(entry["stray"]) or "-"
        print(f"{entry['case']:<{width}}  {entry['exit']:>4}  {entry['tracebacks']:>10}  {stray}")
    tracebacks = sum(entry["tracebacks"] for entry in entries)
    stray_files = sum(len(entry["stray"]) for entry in entries)
    print(f"\nbad inputs tried: {len(entries)}; tracebacks shown: {tracebacks}; stray files left: {stray_files}")
    if result.returncode != 0:
        return result.returncode
    return 1 if tracebacks or stray_files or not entries else 0


if __name__ == "__main__":
    sys.exit(main())
