"""Base models: loading (hub, local, the bundled default) and the identity adapters are checked against."""
