"""Tests of the ``diablo`` command line against a real API server."""
