"""`python -m maskrcnn ...` (also what `torchrun -m maskrcnn train ...` runs)."""

import sys

from maskrcnn.cli import main

sys.exit(main())
