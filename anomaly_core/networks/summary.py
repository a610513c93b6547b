"""Parameter overview of Flax variables (real arrays or `jax.eval_shape` shapes)."""

from collections.abc import Mapping
from typing import Any

import jax
import numpy as np
from clu import parameter_overview


def _is_variables(tree: Any) -> bool:
    # A Flax variables dict: collection names at the top, 'params' among them.
    return isinstance(tree, Mapping) and "params" in tree and isinstance(tree["params"], Mapping)


def count_params(variables_or_params: Any) -> int:
    """Number of scalars in the 'params' collection (or in the whole tree if given params only)."""
    tree = variables_or_params["params"] if _is_variables(variables_or_params) else variables_or_params
    return int(sum(np.prod(np.shape(leaf), dtype=np.int64) for leaf in jax.tree_util.tree_leaves(tree)))


def parameter_summary(variables: Any) -> str:
    """One table per collection ('params' first), each with its total, then the grand total.

    Works on shape-only trees (`jax.ShapeDtypeStruct`), so no memory or compute is needed.
    """
    collections = dict(variables) if _is_variables(variables) else {"params": variables}
    names = ["params"] + sorted(k for k in collections if k != "params")
    parts = []
    for name in names:
        tree = collections[name]
        parts.append(f"[{name}]\n" + parameter_overview.get_parameter_overview(tree, include_stats=False))
    n_params = count_params(collections["params"])
    n_other = sum(count_params(collections[k]) for k in names[1:])
    parts.append(f"Trainable parameters: {n_params:,}; other variables: {n_other:,}")
    return "\n".join(parts)
