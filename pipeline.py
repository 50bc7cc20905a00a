"""The whole pipeline in one command: parse, generate, preprocess, quality gate, train, evaluate, deploy.

    uv run python pipeline.py                      # the bundled sample, embedded defaults
    uv run python pipeline.py --pdf my_policy.pdf

Each stage is its own script, run here in order as a subprocess so that a stage behaves exactly
as when a user runs it by hand; the first failing stage stops the pipeline with its exit code.
"""
from __future__ import annotations

import subprocess
import sys

STAGES = [
    ("generate", ["syntheticdatageneration.py"]),
    ("preprocess", ["preprocessing.py"]),
    ("quality", ["dataquality.py"]),
    ("train", ["train.py"]),
    ("evaluate", ["evaluate.py"]),
]


def main(argv: list[str]) -> int:
    for name, script in STAGES:
        print(f"== {name}: {' '.join(script)}", flush=True)
        code = subprocess.call([sys.executable, *script, *argv])
        if code != 0:
            print(f"pipeline stopped at stage '{name}' (exit {code})", file=sys.stderr)
            return code
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
