"""Browser-facing assets and pages (GraphiQL served from local files)."""
