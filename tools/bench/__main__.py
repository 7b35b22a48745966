"""``python -m tools.bench <scenario> ...`` (the same as ``shardgate bench``)."""

import sys

from tools.bench.cli import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
