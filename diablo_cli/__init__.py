"""The ``diablo`` command line: run the service (``diablo serve``) and manage the database."""
