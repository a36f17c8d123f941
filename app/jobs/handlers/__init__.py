"""The service's own job handlers, one module per job type (each has `register(registry)`)."""
