"""``python -m gateway ARGS`` is ``shardgate ARGS`` (``python -m gateway serve`` serves)."""

import sys

from gateway.cli import main

sys.exit(main())
