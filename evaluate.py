"""Stage 5, base vs tuned evaluation. Not implemented yet (issue 7)."""
import sys

sys.exit("evaluate.py: not implemented yet (issue 7)")
