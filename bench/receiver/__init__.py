"""A local webhook receiver that only counts and timestamps what arrives."""
