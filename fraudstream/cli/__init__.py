"""The ``fraudstream`` command: one command group per module."""
