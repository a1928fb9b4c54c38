"""The text of one benchmark's results file, shared by the benches that write one: a dated header, each
figure printed as it is said, the file written at the end (never after a smoke run, whose figures must not
replace the committed ones)."""
from __future__ import annotations

import os
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class ResultsLog:
    """The lines said so far; `title` and `machine` (if given) head the file, dated, and are not printed."""

    def __init__(self, title: str | None = None, machine: str | None = None):
        self.lines = []
        if title:
            self.lines.append(f"# {title}, {time.strftime('%Y-%m-%d %H:%M:%S', time.gmtime())} UTC")
        if machine:
            self.lines.append(f"# machine: {machine}")

    def say(self, line: str) -> None:
        print(line, flush=True)
        self.lines.append(line)

    def write(self, path: str, smoke: bool) -> None:
        """The results file, except after a smoke run."""
        if smoke:
            print(f"# smoke run: {os.path.relpath(path, REPO)} not written", flush=True)
            return
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as f:
            f.write("\n".join(self.lines) + "\n")
