"""Slack: Events API and Socket Mode in, chat.postMessage out (slack_sdk)."""
