"""The one exception type for bad user input; the CLI prints it as a single line and exits 2."""


class UserError(ValueError):
    """Input the user must change (a path, a field, an option value). The message says what to change."""
