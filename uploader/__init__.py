"""Secure DICOM Uploader: the shared core library of both nodes.

No web framework and no global state here; the services wire these parts together.
"""

import logging

__version__ = "0.1.0"

logging.getLogger(__name__).addHandler(logging.NullHandler())
