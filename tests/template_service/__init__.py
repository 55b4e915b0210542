"""Tests of template_service against real PostgreSQL and Redis."""
