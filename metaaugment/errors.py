"""The one exception type for problems with what the user asked for."""


class UserError(Exception):
    """A bad name, a missing dataset, an invalid option: anything the user can fix.

    The CLI prints the message as one line and exits with code 2; library users catch it
    like any exception. Bugs in the library raise other exceptions and keep their traceback.
    """
