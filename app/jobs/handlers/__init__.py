"""The service's own job handlers, one module per job type (see `BUILTIN_HANDLER_MODULES`)."""
