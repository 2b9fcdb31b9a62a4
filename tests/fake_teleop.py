"""A scripted stand-in for a person at the keyboard / gamepad / leader arm, for recording tests:
it answers ``poll_events`` from a schedule and ramps the joints (the teleop-source interface of
``record_dataset.record_teleop``)."""

from __future__ import annotations

import numpy as np

from so101_sim import teleop_common as tc


class ScheduledPerson:
    """Teleop source whose events come from ``schedule`` ({poll number: [events]}).

    With ``period``, poll n gets the events of ``n % period`` (an endless loop of episodes).
    ``command`` ramps shoulder pan, shoulder lift and the gripper (MuJoCo radians, through
    ``teleop_common.safe_joint_targets`` like a real source).
    """

    def __init__(self, schedule: dict[int, list[str]], period: int | None = None):
        self.schedule, self.period = schedule, period
        self.calls, self.resets, self.q = 0, 0, None

    def reset(self, q):
        self.q, self.resets = np.array(q), self.resets + 1

    def command(self, dt):
        self.q = tc.safe_joint_targets(self.q + np.array([0.05, 0.02, 0, 0, 0, 0.1]), self.q)
        return self.q.copy()

    def poll_events(self):
        n = self.calls if self.period is None else self.calls % self.period
        self.calls += 1
        return self.schedule.get(n, [])

    def close(self):
        pass
