"""What both nodes' staff pages share: accounts (argon2id), server-side sessions, CSRF, security
headers, the base templates and vendored static files (htmx, our CSS), and PNG rendering of
images with their RT contours. Knows neither node: each node adds its own pages."""
