"""`python -m engine`: the same CLI as `diffedit-studio`."""

import sys

from engine.cli import main

sys.exit(main())
