"""``python -m limitstream``: the same command line as the ``limitstream`` script."""

import sys

from limitstream.cli import main

sys.exit(main())
