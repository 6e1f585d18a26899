"""Chapter 5 page (being written)."""
