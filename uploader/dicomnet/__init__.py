"""DICOM networking: the C-STORE SCP and the query/retrieve SCU (pynetdicom), TCP_NODELAY on."""

import logging


def quiet_pynetdicom() -> None:
    """Keep pynetdicom from logging identifiers (query keys, UIDs): warnings and errors only."""
    from pynetdicom import _config

    _config.LOG_REQUEST_IDENTIFIERS = False
    _config.LOG_RESPONSE_IDENTIFIERS = False
    logging.getLogger("pynetdicom").setLevel(logging.WARNING)
