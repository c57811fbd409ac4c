"""``python -m fraudstream.cli``: the same as the ``fraudstream`` command."""

import sys

from fraudstream.cli.main import main

sys.exit(main())
