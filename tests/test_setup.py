"""`make setup` / `make train`: the editable install is quiet.

setuptools announces every editable install with a warning banner (class InformationOnly, a
UserWarning: "Editable installation. Please be careful with folders ..."); the Makefile filters
that one message through PYTHONWARNINGS, which pip's build-backend subprocess inherits. Running
pip here would need a package index, so the test checks the filter the Makefile sets: it drops the
banner and nothing else.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

MAKEFILE = Path(__file__).resolve().parents[1] / "Makefile"


def test_the_install_filters_setuptools_banner_and_nothing_else() -> None:
    install = next(line for line in MAKEFILE.read_text().splitlines() if "pip install" in line and "-e" in line)
    spec = re.search(r'PYTHONWARNINGS="([^"]+)"', install)
    assert spec is not None, install
    code = ("import warnings\n"
            "class InformationOnly(UserWarning): pass\n"  # setuptools.warnings.InformationOnly's base
            "warnings.warn('Editable installation.', InformationOnly)\n"
            "warnings.warn('a real problem', UserWarning)\n")
    env = {**os.environ, "PYTHONWARNINGS": spec.group(1)}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert "Editable installation" not in done.stderr
    assert "a real problem" in done.stderr
