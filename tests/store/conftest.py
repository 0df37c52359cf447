"""Keeps this folder importable by module name (``store_helpers``, ``crash_writer``) now that it
is a package (the contract suite is imported as ``from .contract import *``)."""

from __future__ import annotations

import sys
from pathlib import Path

_HERE = str(Path(__file__).parent)
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)
