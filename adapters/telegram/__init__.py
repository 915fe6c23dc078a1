"""Telegram: webhook or long polling in, sendMessage out (python-telegram-bot)."""
