"""Benchmarks of runserver_plus against its peers: run as ``python -m benchmarks``."""
