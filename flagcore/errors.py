"""The one exception type flagcore raises for problems a user can fix (bad files, bad values)."""


class FlagcoreError(Exception):
    """A user-facing error: its message is one line that names the file, column or value."""
