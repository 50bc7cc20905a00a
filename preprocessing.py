"""Stage 2, flatten and normalise. Not implemented yet (issue 5)."""
import sys

sys.exit("preprocessing.py: not implemented yet (issue 5)")
