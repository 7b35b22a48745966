"""``python -m gateway`` serves, exactly like ``shardgate serve``."""

import sys

from gateway.cli import main

sys.exit(main())
