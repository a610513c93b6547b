"""Mixed precision, shared by both methods: `config.model.dtype` and the casts around it.

Modules take `dtype`, the dtype they compute and return in: None (the config's 'float32')
computes in the input's dtype with no cast (float32 in training, float64 in the parity
tests); bfloat16 casts activations and kernels. Parameters and optimiser state stay
float32. Losses, gradient-penalty norms and normalisation statistics are computed in at
least float32 (`at_least_f32`). bfloat16 has float32's exponent range, so no loss scaling
is needed (float16 would need it and is not offered).
"""

from typing import Any

import jax
import jax.numpy as jnp

from anomaly_core import settings

DTYPES = ("float32", "bfloat16")
DEFAULT_DTYPE = "float32"  # config.model.dtype's default, for every method's model settings
DTYPE_RULE = settings.choice("config.model.dtype", DTYPES)


def compute_dtype(model_cfg: Any) -> Any:
    """The modules' `dtype` for `config.model.dtype` (`model_cfg` a ConfigDict or a dict): None
    or jnp.bfloat16."""
    settings.check(model_cfg, [DTYPE_RULE], at="config.model")
    return None if model_cfg["dtype"] == "float32" else jnp.bfloat16


def cast(x: jax.Array, dtype: Any) -> jax.Array:
    """x in `dtype`; None leaves x as it is."""
    return x if dtype is None else x.astype(dtype)


def at_least_f32(x: jax.Array) -> jax.Array:
    """A narrower float (bfloat16) promoted to float32; float32, float64 and non-floats unchanged."""
    if not jnp.issubdtype(x.dtype, jnp.floating):
        return x
    return x.astype(jnp.promote_types(x.dtype, jnp.float32))
