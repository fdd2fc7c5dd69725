"""``python -m anonymised_node --config FILE``: the same as ``uploader anonymised``."""

import sys

from uploader.cli import main

sys.exit(main(["anonymised", *sys.argv[1:]]))
