"""Run `pip install -v ...` and show what matters: packages collected, and the llama-cpp-python
C++ build's progress ([n/total] compile steps) on one updating line, so a first install that spends
minutes compiling visibly makes progress."""

from __future__ import annotations

import re
import subprocess
import sys
import time

STEP = re.compile(r"^\s*\[(\d+)/(\d+)\]")
SHOW = re.compile(r"^(Collecting|Building wheel|Successfully|ERROR|error:|Using cached|Created wheel)")


def main(argv: list[str]) -> int:
    started = time.monotonic()
    process = subprocess.Popen(
        [sys.executable, "-m", "pip", "install", "-v", *argv],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        bufsize=1,
    )
    tail: list[str] = []
    compiling = False
    assert process.stdout is not None
    for line in process.stdout:
        tail = (tail + [line])[-40:]
        match = STEP.match(line)
        if match:
            compiling = True
            done, total = int(match[1]), int(match[2])
            print(
                f"\r  compiling llama.cpp: {done}/{total} ({time.monotonic() - started:.0f} s)",
                end="",
                flush=True,
            )
            continue
        if compiling:
            print()
            compiling = False
        if SHOW.match(line.strip()):
            print(" ", line.strip()[:160], flush=True)
    code = process.wait()
    if code != 0:
        print("".join(tail), file=sys.stderr)
        print(f"pip install failed with exit code {code}", file=sys.stderr)
    else:
        print(f"  installed in {time.monotonic() - started:.0f} s")
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
