"""The webhook receiver: signed POSTs stored durably before the 200, then processed in batches.

- `signature`: the X-Hub-Signature-256 HMAC over the raw body.
- `inbox`: group commit of raw bodies into `webhook_inbox` (many requests, one transaction).
- `server`: the aiohttp application and `WebhookServer`, an async context manager (port 0 works).
- `events`: a webhook body turned into typed events (pure, no database).
- `processor`: inbox rows applied to the ledger, contacts, templates, senders and campaigns, idempotently.
"""
