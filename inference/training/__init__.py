"""Training of the engines' models (never imported by the node)."""
