"""``python -m restore_cli``: the same as the ``restore`` command."""

import sys

from .cli import main

sys.exit(main())
