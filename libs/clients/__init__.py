"""Clients for calls between services (user and template services), with caching in Redis."""
