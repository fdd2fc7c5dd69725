"""What both nodes share: configuration files, secrets, protocols, the worker loop, readiness,
the start/stop order of a node's parts, and the registry through which each node adds its
commands to ``uploader`` (the core knows neither node)."""
