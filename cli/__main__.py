"""``python -m cli``: the same as the ``tend`` command."""

import sys

from cli.main import main

sys.exit(main())
