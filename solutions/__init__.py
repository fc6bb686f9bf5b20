"""Reference implementations of every exercise, one module per chapter."""
