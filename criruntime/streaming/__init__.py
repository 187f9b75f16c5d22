"""Exec, attach and port-forward streaming: SPDY/3.1 and WebSocket over one HTTP server."""
