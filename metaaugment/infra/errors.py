"""The one exception type for problems with what the user asked for."""
import math

# The largest float32: the optimizers multiply float32 tensors by their hyperparameters, so a
# larger rate overflows inside torch's update instead of failing here.
FLOAT32_MAX = 3.4028234663852886e38


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
        outside = isinstance(value, float) and math.isfinite(value) and abs(value) > FLOAT32_MAX
        hint = " within float32's range (at most 3.4e38)" if outside else ""
        raise ValueError(f"{name} must be {requirement}{hint} (got {value!r})")


def representable(value: float) -> bool:
    """Whether a number is finite and within float32's range (what a hyperparameter that
    scales float32 tensors must be; NaN fails)."""
    return math.isfinite(value) and abs(value) <= FLOAT32_MAX
