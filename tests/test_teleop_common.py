"""teleop_common.print_commands: the standalone loop shared by the keyboard and gamepad scripts."""

import numpy as np
import pytest

from so101_sim import so101_mujoco_utils as u
from so101_sim import teleop_common as tc


class FakeTeleop:
    """Moves shoulder_pan by +0.1 rad per command; events come from a script."""

    def __init__(self, events):
        self.events = list(events)
        self.q = None
        self.resets = 0
        self.closed = False

    def reset(self, q):
        self.q = np.array(q, dtype=float)
        self.resets += 1

    def poll_events(self):
        return self.events.pop(0) if self.events else [tc.EVENT_QUIT]

    def command(self, dt):
        self.q[0] += 0.1
        return self.q.copy()

    def close(self):
        self.closed = True


def test_print_commands_resets_quits_and_prints_lerobot_units(capsys):
    t = FakeTeleop([[], [], [tc.EVENT_RESET], [], [tc.EVENT_QUIT]])
    tc.print_commands(t, 0.0, lambda cmd: f"pan={cmd[0]:.2f}")
    out = capsys.readouterr().out
    home_pan = np.degrees(u.home_pose_rad()[0])
    lines = [s.strip() for s in out.split("\r") if s.strip()]
    assert lines[0].startswith(f"pan={home_pan + np.degrees(0.1):.2f}")
    assert lines[1].startswith(f"pan={home_pan + np.degrees(0.2):.2f}")
    assert lines[2].startswith(f"pan={home_pan + np.degrees(0.1):.2f}") and lines[2].endswith(tc.EVENT_RESET)
    assert len(lines) == 4 and t.resets == 2 and t.closed


def test_safety_cap_is_the_same_joint_speed_at_any_control_rate(monkeypatch):
    """The per-step cap scales with the control rate: same rad/s at 10 and 30 Hz, set on every source."""
    from types import SimpleNamespace

    from so101_sim import record_dataset as rd

    assert tc.max_target_step_rad(u.CONTROL_HZ) == tc.MAX_TARGET_STEP_RAD
    assert tc.max_target_step_rad(30) * 30 == pytest.approx(tc.MAX_TARGET_STEP_RAD * u.CONTROL_HZ)
    monkeypatch.setattr(rd, "_make_source", lambda args: SimpleNamespace(max_step_rad=tc.MAX_TARGET_STEP_RAD))
    assert rd.make_source(SimpleNamespace(input="keyboard", fps=30)).max_step_rad == pytest.approx(tc.MAX_TARGET_STEP_RAD / 3)
