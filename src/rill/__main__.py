"""`python -m rill ...` is `rill ...`."""

import sys

from rill.cli import main

sys.exit(main())
