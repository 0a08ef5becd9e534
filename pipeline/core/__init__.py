"""Plumbing every stage shares: the config schema, paths, file I/O, errors, progress."""
