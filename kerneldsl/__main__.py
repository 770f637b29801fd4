"""`python -m kerneldsl <command>`: kerneldsl's command line.

    python -m kerneldsl tune list | show ID | export [FILE] | import FILE... | prune
"""

from __future__ import annotations

import sys

USAGE = "usage: python -m kerneldsl tune {list,show,export,import,prune} ...  (-h after a command for help)"


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE)
        return 0 if argv else 2
    if argv[0] == "tune":
        from .tuning.cli import main as tune_main
        return tune_main(argv[1:])
    print(f"unknown command {argv[0]!r}\n{USAGE}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
