"""The README's two commands resolve: every prerequisite of `make run` and `make test` exists.

A file the Makefile names that was moved (``pipeline/generator.py`` became a package) breaks `make
run` on a fresh clone before anything runs, while `make test` (what CI runs) still passes; a dry
run (``make -n``) of both targets catches it without installing or running anything.
"""

from __future__ import annotations

import shutil
import subprocess

import pytest

from conftest import REPO


@pytest.mark.parametrize("target", ["run", "test", "data"])
def test_make_resolves_the_readme_targets(target):
    assert shutil.which("make"), "make is needed for the README's two commands"
    # -B: consider every target out of date, so every prerequisite is checked even if built already
    proc = subprocess.run(["make", "-n", "-B", target], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "No rule to make target" not in proc.stderr
