"""Code shared by the tour notebooks, written once: the runner for `medres` commands.

Notebooks 01 and 02 import it with ``from _helpers import medres``. Jupyter
starts a notebook's kernel in the notebook's folder, so this file is importable
there without installing anything; ``tests/notebooks/test_notebooks.py`` puts
this folder on the kernel's ``PYTHONPATH`` because it runs the notebooks in a
temporary working directory.
"""

from __future__ import annotations

import shlex

from medres.cli.main import main


def medres(*arguments: object) -> None:
    """Print and run one `medres` command, as a shell would; stop the notebook if it fails.

    The command is printed first so that each cell doubles as a copy-paste
    shell command. It runs in the kernel's process through
    ``medres.cli.main.main``, the function behind the ``medres`` console script.

    Args:
        *arguments: The command's words after ``medres``; paths and numbers are
            turned into strings.

    Raises:
        RuntimeError: The command exited with a non-zero code (its one-line
            reason is already printed above the error).
    """
    words = [str(argument) for argument in arguments]
    print("$ medres", shlex.join(words))
    code = main(words)
    if code != 0:
        raise RuntimeError(f"medres exited with {code}")
