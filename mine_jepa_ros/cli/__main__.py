"""``python -m mine_jepa_ros.cli`` = ``mine-jepa``."""

import sys

from mine_jepa_ros.cli.main import main

sys.exit(main())
