"""The one exception type for problems with what the user asked for."""


class UserError(Exception):
    """A bad name, a missing dataset, an invalid option: anything the user can fix.

    The CLI prints the message as one line and exits with code 2; library users catch it
    like any exception. Bugs in the library raise other exceptions and keep their traceback.
    """


def check_option(ok: bool, name: str, value: object, requirement: str) -> None:
    """Raise ValueError("`name` must be `requirement` (got value)") unless `ok`.

    Constructors check their options with it, each condition written so that NaN fails
    (`x > 0`, never `not x <= 0`); the registries turn the ValueError into a one-line
    UserError naming the option (`Registry.create`).
    """
    if not ok:
        raise ValueError(f"{name} must be {requirement} (got {value!r})")
