"""Fixtures of the keys tests: the shared platform processes."""

from tests.integration.keys.platform_stack import keys_vault, platform

__all__ = ["keys_vault", "platform"]
