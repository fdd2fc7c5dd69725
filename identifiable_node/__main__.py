"""``python -m identifiable_node --config FILE``: the same as ``uploader identifiable``."""

import sys

from uploader.cli import main

sys.exit(main(["identifiable", *sys.argv[1:]]))
