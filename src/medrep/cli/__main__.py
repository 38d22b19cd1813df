"""``python -m medrep.cli``, as the cli.py module it replaces allowed; ``python -m medrep`` is the usual way."""

import sys

from medrep.cli import main

sys.exit(main())
