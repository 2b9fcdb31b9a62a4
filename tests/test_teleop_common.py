"""teleop_common.print_commands: the standalone loop shared by the keyboard and gamepad scripts."""

import numpy as np

import so101_mujoco_utils as u
import teleop_common as tc


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
