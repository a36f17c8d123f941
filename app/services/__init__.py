"""Use cases, one module per feature. All rules of DESIGN §1 live here; no SQL, no HTTP."""
