"""``python -m study.cli ...``: the ``oodstudy`` command."""

import sys

from study.cli import main

sys.exit(main())
