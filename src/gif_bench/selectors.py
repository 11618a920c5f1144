"""The parameter selectors of :func:`gif_bench.influence.select`, with their labels."""

from dataclasses import dataclass

from .registry import Registry


@dataclass(frozen=True)
class SelectorSpec:
    """A parameter selector of :func:`gif_bench.influence.select`; ``label`` names its line
    in the selector study (``None``: not a selector the study compares, e.g. ``all``);
    ``uses_fisher``: it scores with the empirical Fisher's diagonal on the Hessian sample."""

    name: str
    label: str | None
    uses_fisher: bool = False


SELECTORS: Registry[SelectorSpec] = Registry("selector")

for _name, _label in (
    ("highest_k_outputs", "Highest-k outputs"),
    ("highest_k_gradients", "Highest-k gradients"),
    ("lowest_k_outputs", "Lowest-k outputs"),
    ("lowest_k_gradients", "Lowest-k gradients"),
    ("random", "Random"),
    ("all", None),  # every Conv/Linear parameter: the choice of every selector at mr=1
):
    SELECTORS.register(SelectorSpec(_name, _label))
SELECTORS.register(SelectorSpec("curvature", "Curvature (g²/F)", uses_fisher=True))
