"""The cassette: one recorded request with its outgoing calls (format version 1)."""

FORMAT_NAME = "timetracer-cassette"
FORMAT_VERSION = 1

__all__ = ["FORMAT_NAME", "FORMAT_VERSION"]
