"""``python -m uploader`` is the ``uploader`` command."""

import sys

from uploader.cli import main

sys.exit(main())
