"""The DAG processor: `python -m weft.processor FILE [FILE ...]` imports each DAG file and
prints one JSON line per file: `{"file": ..., "dags": [DagSpec, ...], "error": null | {...}}`.

Anything the DAG files print goes to stderr, so stdout carries only the answers."""

import json
import os
import sys

from .loader import load_specs


def protect_stdout():
    """A private handle on the real stdout; fd 1 (and `print`) now lead to stderr, so neither
    a DAG file nor a child process it starts can corrupt the protocol."""
    channel = os.fdopen(os.dup(1), "w", encoding="utf-8", buffering=1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    return channel


def main(argv=None):
    files = sys.argv[1:] if argv is None else argv
    if not files:
        print("usage: python -m weft.processor FILE [FILE ...]", file=sys.stderr)
        return 2
    channel = protect_stdout()
    for path in files:
        answer = load_specs(path)
        channel.write(json.dumps(answer, allow_nan=False) + "\n")
        channel.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
