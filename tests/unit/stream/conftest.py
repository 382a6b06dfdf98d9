"""Fixtures shared by the stream unit tests."""

from tests.unit.stream.handler_fakes import parts  # noqa: F401 - the handler tests' model worker and settings
