"""Notifications: destinations (webhook, Slack, SNS, MQTT) and the notifier that fans events out
to them."""
