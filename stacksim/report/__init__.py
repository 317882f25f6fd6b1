"""Reports for people: plots (matplotlib is imported here only)."""
