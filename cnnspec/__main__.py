"""``python -m cnnspec`` runs the command line."""

import os
import sys

# `python -m` puts the current folder first on sys.path; a spec's repository checked out there
# must not shadow the modules imported from here on (pluggy, rich, torch, a plugin's name).
if sys.path and sys.path[0] in ("", os.getcwd()):
    del sys.path[0]

from cnnspec.cli import entry  # noqa: E402

entry()
