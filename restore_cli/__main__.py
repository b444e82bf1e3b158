"""``python -m restore_cli``: the same as the ``restore`` command."""

from ._entry import main

main()
