"""The error the benchmark and the data tools raise for bad user data.

It lives on the benchmark side, which imports nothing from utils/, so that the training harness and
the tools (utils/, which re-export it) raise and catch the same class.
"""


class DataError(Exception):
    """A problem with the user's data or arguments, reported without a traceback by every CLI."""
