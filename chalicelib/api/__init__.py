"""The registry's HTTP API: one module per resource, as distribution's registry/handlers."""
