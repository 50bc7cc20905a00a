"""Stage 3, quality gate. Not implemented yet (issue 5)."""
import sys

sys.exit("dataquality.py: not implemented yet (issue 5)")
