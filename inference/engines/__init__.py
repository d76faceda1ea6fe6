"""Engines and their registry."""
