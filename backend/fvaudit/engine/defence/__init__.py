"""defence."""
