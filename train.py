"""Stage 4, LoRA fine-tuning. Not implemented yet (issue 6)."""
import sys

sys.exit("train.py: not implemented yet (issue 6)")
