"""Helpers the tests share: isolated vhosts, databases and Redis prefixes; in-process servers."""
