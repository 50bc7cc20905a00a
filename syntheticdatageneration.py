"""Stage 1, parse PDFs and generate instruction pairs. Not implemented yet (issue 3 and 4)."""
import sys

sys.exit("syntheticdatageneration.py: not implemented yet (issue 3 and 4)")
