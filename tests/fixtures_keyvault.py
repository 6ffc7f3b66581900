"""Fixtures for the keyvault stand-in (filled in by its module owner)."""
