"""The one exception type for problems with what the user asked for."""
import math

# The largest float32: the optimizers multiply float32 tensors by their hyperparameters, so a
# larger rate overflows inside torch's update instead of failing here.
FLOAT32_MAX = 3.4028234663852886e38
# The smallest positive float32 (denormals included): a smaller positive hyperparameter is zero
# in the float32 tensors it scales (a learning rate of 1e-46 trains nothing, at chance).
FLOAT32_SMALLEST = 1.401298464324817e-45


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
        vanishing = isinstance(value, float) and 0 < abs(value) < FLOAT32_SMALLEST
        hint = (" within float32's range (at most 3.4e38)" if outside else
                " that float32 can hold (it rounds this to 0; at least 1.4e-45)" if vanishing else "")
        raise ValueError(f"{name} must be {requirement}{hint} (got {value!r})")


def representable(value: float) -> bool:
    """Whether a number is finite, within float32's range and, unless 0, not rounded to 0 in
    float32 (what a hyperparameter that scales float32 tensors must be; NaN fails)."""
    return math.isfinite(value) and abs(value) <= FLOAT32_MAX and (value == 0 or abs(value) >= FLOAT32_SMALLEST)
