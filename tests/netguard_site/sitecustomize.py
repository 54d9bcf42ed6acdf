"""Loaded by every Python subprocess of the test suite (conftest puts this folder on PYTHONPATH)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import netguard

del sys.path[0]
netguard.install()
