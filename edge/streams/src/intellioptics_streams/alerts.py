"""Alert conditions on a stream's answers, as Groundlight's alerts have them.

``same_answer``: the answer (``answer``, or any answer when unset) came ``times`` times in
a row; it fires when the streak reaches ``times`` and again only after the streak broke.
``answer_changed``: the answer differs from the previous one of the same detector.
Each rule watches one detector (``detector_id``) or each detector of the stream on its own.
"""

from __future__ import annotations

from dataclasses import dataclass

from intellioptics_common.streams import AlertRule


@dataclass(frozen=True)
class Fired:
    rule: AlertRule
    detector_id: str
    label: str
    previous_label: str | None
    streak: int


class AlertTracker:
    def __init__(self, rules: list[AlertRule]) -> None:
        self._rules = rules
        self._last: dict[str, str] = {}
        self._streak: dict[str, int] = {}

    def observe(self, detector_id: str, label: str) -> list[Fired]:
        previous = self._last.get(detector_id)
        streak = self._streak.get(detector_id, 0) + 1 if previous == label else 1
        self._last[detector_id], self._streak[detector_id] = label, streak
        fired = []
        for rule in self._rules:
            if rule.detector_id is not None and rule.detector_id != detector_id:
                continue
            if rule.when == "answer_changed":
                hit = previous is not None and previous != label
            else:
                hit = (rule.answer is None or rule.answer == label) and streak == rule.times
            if hit:
                fired.append(Fired(rule, detector_id, label, previous, streak))
        return fired
