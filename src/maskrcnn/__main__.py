"""`python -m maskrcnn ...` (also what `torchrun -m maskrcnn train ...` runs)."""

import sys

from maskrcnn.cli.main import main

sys.exit(main())
