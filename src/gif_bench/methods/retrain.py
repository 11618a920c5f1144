"""The oracle: the model trained from scratch on the edited training set (U removed, or U's
labels corrected) with the original's recipe and seed. Every run computes it (cached, shared
by every method of a setting) as the reference; as a method, it is the result itself."""

from .spec import MethodSpec

SPEC = MethodSpec(name="retrain", label="retrain from scratch", uses_mask=False, oracle=True)
