"""The sources a snapshot can be built from."""
