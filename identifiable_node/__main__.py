"""``python -m identifiable_node --config FILE``: the same as ``uploader identifiable``."""

import sys

from uploader.cli import main

if __name__ == "__main__":  # worker processes import this module again: do nothing then
    sys.exit(main(["identifiable", *sys.argv[1:]]))
