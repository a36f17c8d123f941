"""Image Management Service: a GraphQL API server for virtual-machine images."""

__version__ = "0.1.0"
