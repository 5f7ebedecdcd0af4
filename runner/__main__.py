"""`python -m runner` is the same as the `runner` console script."""

from __future__ import annotations

import sys

from runner.cli import main

sys.exit(main())
