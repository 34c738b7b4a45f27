"""Payload capture: what the application sends and receives, recorded without changing it."""
