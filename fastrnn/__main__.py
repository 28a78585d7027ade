"""``python -m fastrnn``: the fastrnn command line (see fastrnn.cli)."""
import sys

from .cli import main

sys.exit(main())
