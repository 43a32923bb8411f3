"""Secrets: API keys only from environment variables named in the config, never written anywhere.

`check_env_names` refuses a config whose ``[exchange] api_key_env`` / ``secret_env`` hold something
that is not an environment-variable name (a pasted key). `Redactor` replaces the values of those
variables in every line the runner logs, stores or prints.
"""

from __future__ import annotations

import os
import re

from bot.errors import UserError

_ENV_NAME = re.compile(r"^[A-Z_][A-Z0-9_]{0,63}$")


def check_env_names(api_key_env: str, secret_env: str) -> None:
    """One-line `UserError` when either setting looks like a literal key instead of a variable name."""
    for field, value in (("api_key_env", api_key_env), ("secret_env", secret_env)):
        if not _ENV_NAME.match(value or ""):
            raise UserError(f"config [exchange] {field} must name an environment variable (like CASCADE_API_KEY), "
                            "not hold a key; put the key in the environment and its variable's name here")


def credentials(api_key_env: str, secret_env: str, required: bool) -> tuple[str | None, str | None]:
    """The key and secret from the environment (``required``: a one-line error when missing)."""
    check_env_names(api_key_env, secret_env)
    key, secret = os.environ.get(api_key_env), os.environ.get(secret_env)
    if required and not (key and secret):
        raise UserError(f"set the environment variables {api_key_env} and {secret_env} (the API key and secret; "
                        "[exchange] names them)")
    return key, secret


class Redactor:
    """Replaces secret values in text (module docstring)."""

    def __init__(self, *secrets: str | None) -> None:
        self.secrets = [s for s in secrets if s and len(s) >= 4]

    def __call__(self, text: str) -> str:
        for s in self.secrets:
            text = text.replace(s, "***")
        return text
