"""``python -m onerl`` (and ``torchrun ... -m onerl``) is the ``onerl`` command."""
import sys

from .cli import main

sys.exit(main())
