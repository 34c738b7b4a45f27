"""Span processors and exporters that turn recorded traces into cassettes."""

from .process_writer import ProcessWriter
from .processor import CassetteSpanProcessor
from .writer import CassetteWriter

__all__ = ["CassetteSpanProcessor", "CassetteWriter", "ProcessWriter"]
