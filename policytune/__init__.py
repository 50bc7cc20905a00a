"""What the policytune stage scripts share: config, I/O, chat format, models, LLM endpoint, stages' logic."""
import logging

# bitsandbytes warns on every import on a CPU with AVX512-BF16 that an optional download-at-run-time
# kernel package is missing; 4-bit on CPU is never used here (quantization auto = none on CPU).
logging.getLogger("bitsandbytes").setLevel(logging.ERROR)
