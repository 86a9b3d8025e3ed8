"""``python -m zmem``: the ``zmem`` command."""

import sys

from .cli import main

sys.exit(main())
