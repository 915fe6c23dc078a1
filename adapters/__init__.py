"""Platform adapters: one sub-package per platform, each with `normalize.py` (pure: payload ->
`bot.messages.Message`), `send.py` (`Reply` -> platform API) and `adapter.py` (routes or the
long-lived connection). Adapters depend on `bot` types and protocols only."""
