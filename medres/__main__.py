"""``python -m medres`` (and ``torchrun -m medres``) runs the command line."""

import sys

from medres.cli.main import main

sys.exit(main())
