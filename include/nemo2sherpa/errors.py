"""Errors a person can act on."""


class InputError(Exception):
    """Bad input: the message names the problem and the fix. The CLI prints it as one line, exit 2."""


class GateFailed(Exception):
    """A validation gate failed: the bundle must not be published."""
