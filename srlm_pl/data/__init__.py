"""Data: sources, built-in generators, templates, collation and the DataModule family."""
