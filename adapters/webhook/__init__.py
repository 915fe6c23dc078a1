"""The generic signed webhook adapter: `POST /webhooks/{name}` in, the reply in the response
(`?wait=true`) or POSTed to `WEBHOOK_CALLBACK_URL`, signed the same way."""
