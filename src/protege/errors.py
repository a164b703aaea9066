"""The one exception type for mistakes a user can fix (bad input, bad config, missing file).

The CLI prints these as one line and exits non-zero; anything else is a bug and keeps
its traceback. Messages carry the offending values so the line alone is actionable.
"""


class UserError(Exception):
    """A problem with the user's input, config or environment, described in one line."""
