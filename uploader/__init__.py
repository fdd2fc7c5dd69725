"""Secure DICOM Uploader: the shared core library of both nodes.

No web framework and no global state here; the services wire these parts together.
"""

import logging

from uploader.version import __version__

__all__ = ["__version__"]

logging.getLogger(__name__).addHandler(logging.NullHandler())
