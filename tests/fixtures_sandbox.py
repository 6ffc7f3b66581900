"""Fixtures for the sandbox stand-in (filled in by its module owner)."""
