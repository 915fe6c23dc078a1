"""The console adapter: `bot ask` and `bot chat` go through the same inbox and pipeline as
every platform, and the reply comes back through a `ReplyRendezvous`."""
