"""Celery workers that train DiaBlo adapters for fine-tuning jobs.

Start one worker per device; it runs one job at a time::

    celery -A worker.celery_app:app worker --pool solo --concurrency 1 -Q diablo --loglevel INFO

(``-Q`` names the queue of ``DIABLO_QUEUE_NAME``, ``diablo`` by default). The task ``diablo.train(job_id)``
claims the job in the registry, trains through ``diablo_core``, records events and checkpoints, and
registers the adapter; see ``worker.training_job``.
"""
