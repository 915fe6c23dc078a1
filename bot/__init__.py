"""Switchboard's engine: message types, inbox, pipeline, memory, generation, HTTP and CLI.

Public facade; the modules behind it may move.
"""

from bot.config import Settings, load_settings
from bot.errors import BotError, ConfigError, KnowledgeError, PayloadError, ServiceUnavailable
from bot.messages import Conversation, Message, Passage, Reply, Source

__all__ = [
    "BotError", "ConfigError", "Conversation", "KnowledgeError", "Message", "Passage",
    "PayloadError", "Reply", "ServiceUnavailable", "Settings", "Source", "load_settings",
]
