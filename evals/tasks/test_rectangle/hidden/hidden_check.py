"""Runs the new tests against broken copies of the module: each broken copy must make them fail."""

import os
import subprocess
import sys
from pathlib import Path

MODULE = Path('geometry/rectangle.py')
TESTS = 'tests/test_rectangle.py'
MUTANTS = [('return self.width * self.height', 'return self.width + self.height'), ('return 2 * (self.width + self.height)', 'return self.width + self.height')]

original = MODULE.read_text()
env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1")
failures = []
try:
    for old, new in MUTANTS:
        assert old in original, f"mutant anchor {old!r} not found in {MODULE}"
        MODULE.write_text(original.replace(old, new, 1))
        result = subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", TESTS],
            capture_output=True,
            env=env,
        )
        if result.returncode == 0:
            failures.append(f"{TESTS} still passes when {old!r} becomes {new!r}")
finally:
    MODULE.write_text(original)
if failures:
    sys.exit("the new tests do not test the code:\n" + "\n".join(failures))
print(f"{TESTS} catches all {len(MUTANTS)} broken versions")
