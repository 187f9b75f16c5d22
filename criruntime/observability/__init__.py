"""Logs and metrics: what a node operator reads when something goes wrong."""
