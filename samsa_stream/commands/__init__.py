"""One module per ``samsa-stream`` sub-command; each defines ``register(subparsers)``."""
