"""Notifications: webhooks (HMAC-signed, retried with backoff, logged) and SMTP e-mail on run finished, run
failed, run stuck (requeued by the reaper) and submission excluded. An outbox over the audit log, dispatched by
the trusted scorer's beat (:mod:`api.notifications.dispatcher`); docs/notifications.md for users."""
