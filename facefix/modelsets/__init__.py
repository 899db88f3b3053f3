"""modelsets."""
