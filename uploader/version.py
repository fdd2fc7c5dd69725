"""The one source of the product's version and of our DICOM implementation identity.

The version is the installed distribution's (``pyproject.toml``), read with
:mod:`importlib.metadata`; everything that shows a version uses this one (``--version``, the
implementation version name in every file and association, the compose image tags through
``.env``, which ``tools/gen_env.py`` writes and ``./dev lint`` checks).

The implementation class UID is ours: a UUID-derived UID under the ``2.25`` arc (ISO/IEC
9834-8, PS3.5 annex B.2), made once for this project from a random UUID, so it needs no
registered root. Every file meta we write and every association we accept names it.
"""

from importlib.metadata import version

DISTRIBUTION = "secure-dicom-uploader"
__version__ = version(DISTRIBUTION)

IMPLEMENTATION_CLASS_UID = "2.25.207426181543870383302773931298716632741"
IMPLEMENTATION_VERSION_NAME = f"SDU_{__version__}"[:16]  # SH: at most 16 characters
