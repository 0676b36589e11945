"""Benchmarks of the service (not tests): ``python -m bench [--quick]`` runs them all."""
