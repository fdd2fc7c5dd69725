"""DICOM networking: the C-STORE SCP and the query/retrieve SCU (pynetdicom), TCP_NODELAY on."""
