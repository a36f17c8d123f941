"""Persistence: tables, the async engine, repositories (the only SQL), the unit of work."""
