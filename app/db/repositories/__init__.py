"""Repositories: every SQL statement of the service lives in this package.

Each takes the caller's account where rows are tenant data, and never returns rows the
caller may not see. They never commit: the unit of work does.
"""
