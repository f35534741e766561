"""coldmail: a self-hosted email scheduling backend."""

__version__ = "0.1.0"
