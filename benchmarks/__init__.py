"""Benchmarks of the whole system on this machine (`make bench`)."""
