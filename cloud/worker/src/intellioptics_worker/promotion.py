"""Promotion policy: does the new version replace the active one?

Both versions were scored on the same evaluation images, which the active version did
not train on where that was possible. "Not worse" is judged on balanced accuracy first
(the edge's answers must be right on every class, not just the common one), then, when
that is a tie, on what the edge will actually do at the detector's threshold: the
accuracy of its confident answers must not drop, and a higher confident coverage (fewer
escalations) breaks the tie in favour of the new version. A tie within one image's worth
of score counts as "not worse": on a few dozen images, one image is noise.

COUNT and BOUNDING_BOX versions are judged the same way on their own headline figure
(count exact-match, and F1 of the boxes at IoU 0.3): anything with the :class:`Measured`
shape goes through :func:`decide`.

Whatever the comparison says, a version whose confident out-of-fold answers are right
less often than the detector's threshold is never activated: the edge would give those
answers without asking anyone, so they must be right at least a share T of the time.
A version that answers nothing confidently passes (it escalates everything, which is
safe) and the calibration in the training library is what makes it answer when it can.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol


class Measured(Protocol):
    """What promotion reads of one version measured on a set of images."""

    @property
    def n(self) -> int: ...
    @property
    def headline_name(self) -> str: ...  # "balanced accuracy", "count exact-match", ...
    @property
    def headline(self) -> float: ...
    @property
    def tolerance(self) -> float: ...  # one image's worth of the headline: a tie
    @property
    def confident_coverage(self) -> float: ...
    @property
    def confident_accuracy(self) -> float | None: ...
    @property
    def threshold(self) -> float: ...
    def to_dict(self) -> dict[str, Any]: ...  # the version's metrics as the cloud stores them


ACTIVATE = "activate"
CANDIDATE = "candidate"


@dataclass(frozen=True)
class Decision:
    action: str  # ACTIVATE | CANDIDATE
    reason: str

    @property
    def activate(self) -> bool:
        return self.action == ACTIVATE

    def to_dict(self) -> dict[str, str]:
        return {"action": self.action, "reason": self.reason}


def decide(
    policy: str,
    new: Measured | None,
    active: Measured | None,
    *,
    own: Measured | None = None,
    active_version: int | None = None,
    note: str | None = None,
) -> Decision:
    """``new`` and ``active`` must be measured on the same images; ``own`` is the new
    version's out-of-fold measure on all its images (the threshold gate); ``note`` is
    appended to the reason."""
    suffix = f" ({note})" if note else ""
    short = _short_of_threshold(own)
    if new is None or active is None:
        if policy == "manual":
            return Decision(CANDIDATE, f"promotion policy is manual; no active version to compare with{suffix}")
        if short:
            return Decision(CANDIDATE, f"{short}{suffix}")
        return Decision(ACTIVATE, f"no active version to compare with: this one becomes active{suffix}")
    tolerance = new.tolerance + 1e-9
    name = f"v{active_version}" if active_version is not None else "the active version"
    summary = (
        f"on {new.n} evaluation images: {new.headline_name} {new.headline:.3f} vs {active.headline:.3f} "
        f"({name}); confident accuracy {_fmt(new.confident_accuracy)} vs {_fmt(active.confident_accuracy)}, "
        f"coverage {new.confident_coverage:.2f} vs {active.confident_coverage:.2f} at threshold {new.threshold:g}"
    )
    verdict, why = _compare(new, active, tolerance)
    if policy == "manual":
        return Decision(CANDIDATE, f"promotion policy is manual (new version {why}) {summary}{suffix}")
    if verdict and short:
        return Decision(CANDIDATE, f"{short}; {why} {summary}{suffix}")
    return Decision(ACTIVATE if verdict else CANDIDATE, f"{why} {summary}{suffix}")


def _short_of_threshold(own: Measured | None) -> str | None:
    """The reason a version must not serve, or None when its confident answers hold up."""
    if own is None or own.confident_accuracy is None or own.confident_accuracy >= own.threshold:
        return None
    confident = round(own.confident_coverage * own.n)
    return (
        f"its confident out-of-fold answers fall short of the threshold: accuracy {own.confident_accuracy:.3f} "
        f"on {confident} of {own.n} images answered at or above {own.threshold:g}"
    )


def _compare(new: Measured, active: Measured, tolerance: float) -> tuple[bool, str]:
    delta = new.headline - active.headline
    if delta < -tolerance:
        return False, "worse than the active version:"
    if delta > tolerance:
        return True, "better than the active version:"
    new_ca = new.confident_accuracy if new.confident_accuracy is not None else 1.0
    active_ca = active.confident_accuracy if active.confident_accuracy is not None else 1.0
    if new.confident_accuracy is not None and new_ca < active_ca - tolerance:
        return False, f"ties on {new.headline_name} but its confident answers are less accurate:"
    if new.confident_coverage + tolerance < active.confident_coverage:
        return False, f"ties on {new.headline_name} but answers fewer images confidently:"
    return True, "not worse than the active version:"


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"
