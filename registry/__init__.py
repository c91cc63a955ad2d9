"""The registry shared by the API and the workers: settings, tables, sessions, job lifecycle.

Torch-free by design: importing it never loads torch or transformers (only torch-free diablo_core modules).
Each name has one home, its module (``registry.jobs``, ``registry.artifacts``, ``registry.db``, ...), and is
imported from there.
"""
