"""Checks of what a store holds: one version's objects (verify) and the whole store's invariants (check)."""
