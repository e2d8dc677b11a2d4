"""``python -m prevad_rx`` runs the command line."""

import sys

from prevad_rx.cli import main

sys.exit(main())
