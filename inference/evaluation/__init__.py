"""Evaluation of the engines on held-out phantom data (never imported by the node)."""
