"""Replay: answering outgoing calls from a cassette."""
