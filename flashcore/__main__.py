"""``python -m flashcore``: the one command line (:mod:`flashcore.cli`)."""
import sys

from .cli import main

sys.exit(main())
