"""Writable overlays: the durable upper layer, the merged view over a version, and commit."""
