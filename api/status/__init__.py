"""The queue contract made visible: per declared queue its length, runs in progress, workers online and
median wait (``GET /api/status`` and the ``/status`` page), and a queued submission's position and
estimated wait."""
