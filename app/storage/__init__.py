"""Object storage: the `ObjectStore` port and its adapters (filesystem, S3)."""
