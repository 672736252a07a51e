"""``python -m medres`` (and ``torchrun -m medres``) runs the command line."""

from medres.cli.main import console_main

console_main()
