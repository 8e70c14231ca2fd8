"""Crashes before writing anything."""

import sys

print("loading the model ...", file=sys.stderr)
raise RuntimeError("the model file is corrupt")
