"""``python -m mpmcore``: the ``mpmlab`` command."""

import sys

from mpmcore.cli import main

sys.exit(main())
