"""The anonymised node's staff pages: the review queue, study pages with images and RT
contours, approve / reject, the audit log (built on the core's ``uploader.web``)."""
