"""Gamepad teleoperation of the simulated SO-101 in joint space (pygame joystick).

Copy-paste (from simulation_code/): list the detected controllers, then print their axes, buttons
and the commanded joints (Options/Start or Ctrl-C quits)

    python teleop_gamepad.py

Stick/button map (the project spec's "Gamepad Controls (DualShock 4)"; Xbox names in
brackets); sticks and triggers move their joint at up to ``teleop_common.JOINT_SPEED_RAD_S``:

    Left stick X / Y     shoulder pan (right = right) / shoulder lift (push = forward/down)
    Right stick X / Y    wrist roll / wrist flex (push = tip down)
    L1 / R1  [LB / RB]   elbow retract / extend
    L2 / R2  [LT / RT]   gripper close / open
    Cross    [A]         start/stop recording
    Circle   [B]         reset environment
    Options  [Start]     quit

Axis and button numbers are those pygame 2 (SDL 2) reports on Linux for a DualShock 4 (HIDAPI
driver; also DualSense) and for Xbox 360/One pads (source: pygame's joystick documentation,
"Common Controller Axis Mappings"). The layout is chosen from the controller's name
(``--layout auto``); other platforms or drivers may number them differently: run this script,
press each control and pass ``--layout`` accordingly. A dead zone (default 0.1 of full
deflection) ignores stick drift; past it the response is rescaled to start from zero.

No display is needed (the SDL dummy video driver is used when none is set), but a controller is:
without one, :class:`GamepadTeleop` raises ``TeleopUnavailable`` saying so.
"""

from __future__ import annotations

import argparse
import os
import sys
import warnings
from dataclasses import dataclass, field

import numpy as np

from so101_sim import cli_args
from so101_sim import mujoco_rendering
from so101_sim import so101_mujoco_utils as u
from so101_sim import teleop_common as tc

DEFAULT_DEAD_ZONE = 0.1


@dataclass(frozen=True)
class GamepadLayout:
    """Raw SDL axis/button indices of one controller family.

    ``axes`` names: left_x, left_y, right_x, right_y, l2, r2 (sticks -1..1, up = -1; triggers
    ``trigger_rest`` when released .. +1 fully pressed). ``buttons`` names: l1, r1, toggle, reset,
    quit.
    """

    name: str
    axes: dict[str, int]
    buttons: dict[str, int]
    trigger_rest: float = -1.0
    name_hints: tuple[str, ...] = field(default=())


#: pygame 2 joystick numbering (pygame docs, "PlayStation 4 Controller (pygame 2.x)").
DS4 = GamepadLayout(
    name="ds4",
    axes={"left_x": 0, "left_y": 1, "right_x": 2, "right_y": 3, "l2": 4, "r2": 5},
    buttons={"toggle": 0, "reset": 1, "quit": 6, "l1": 9, "r1": 10},  # Cross, Circle, Options
    name_hints=("ps4", "ps5", "dualshock", "dualsense", "wireless controller", "sony"),
)
#: pygame 2 joystick numbering (pygame docs, "Xbox 360 Controller (pygame 2.x)").
XBOX = GamepadLayout(
    name="xbox",
    axes={"left_x": 0, "left_y": 1, "l2": 2, "right_x": 3, "right_y": 4, "r2": 5},
    buttons={"toggle": 0, "reset": 1, "quit": 7, "l1": 4, "r1": 5},  # A, B, Start
    name_hints=("xbox", "x-box", "microsoft", "xinput"),
)
LAYOUTS = {"ds4": DS4, "xbox": XBOX}
BUTTON_EVENTS = {"toggle": tc.EVENT_TOGGLE, "reset": tc.EVENT_RESET, "quit": tc.EVENT_QUIT}


def detect_layout(controller_name: str) -> GamepadLayout:
    """Layout for a controller name as SDL reports it (DualShock/DualSense -> ds4; otherwise,
    Xbox and generic XInput pads -> xbox)."""
    low = controller_name.lower()
    for layout in (DS4, XBOX):
        if any(h in low for h in layout.name_hints):
            return layout
    return XBOX


def apply_dead_zone(value: float, dead_zone: float = DEFAULT_DEAD_ZONE) -> float:
    """Stick value in -1..1 -> 0 inside ``|value| < dead_zone``, else rescaled so the output
    rises continuously from 0 at the dead-zone edge to +-1 at full deflection."""
    v = float(np.clip(value, -1.0, 1.0))
    if abs(v) < dead_zone:
        return 0.0
    return float(np.sign(v) * (abs(v) - dead_zone) / (1.0 - dead_zone))


def trigger_amount(value: float, rest: float = -1.0) -> float:
    """Analog trigger reading -> how far it is pressed, 0..1 (``rest`` = released reading)."""
    return float(np.clip((value - rest) / (1.0 - rest), 0.0, 1.0))


def gamepad_velocity(axes: dict[str, float], buttons, dead_zone: float = DEFAULT_DEAD_ZONE,
                     speeds=tc.JOINT_SPEED_RAD_S, trigger_rest: float = -1.0) -> np.ndarray:
    """Pure stick/button -> joint-velocity mapping (no device needed).

    Args:
        axes: named axis readings (``left_x``, ``left_y``, ``right_x``, ``right_y`` in -1..1 with
            up = -1; ``l2``, ``r2`` triggers from ``trigger_rest`` to 1); missing = at rest.
        buttons: names of the held buttons (``l1``, ``r1`` are used).
        dead_zone: fraction of full deflection ignored on sticks and triggers.
        speeds: (6,) rad/s at full deflection.
    Returns:
        float64 (6,) joint velocities, rad/s, MuJoCo frame (see the module docstring's map).
    """
    dz = dead_zone

    def stick(name: str) -> float:
        return apply_dead_zone(axes.get(name, 0.0), dz)

    def trig(name: str) -> float:
        amount = trigger_amount(axes.get(name, trigger_rest), trigger_rest)
        return 0.0 if amount < dz else (amount - dz) / (1.0 - dz)

    held = set(buttons)
    direction = np.array([
        stick("left_x"),  # shoulder pan: right = +x side
        -stick("left_y"),  # shoulder lift: push (up = -1) = forward/down = +
        float("l1" in held) - float("r1" in held),  # elbow: L1 retract (+), R1 extend (-)
        -stick("right_y"),  # wrist flex: push = tip down = +
        stick("right_x"),  # wrist roll
        trig("r2") - trig("l2"),  # gripper: R2 open (+), L2 close (-)
    ]) + 0.0  # no negative zeros
    return np.clip(direction, -1.0, 1.0) * np.asarray(speeds, dtype=np.float64)


def init_pygame():
    """Import and initialise pygame for joystick input without opening a window (dummy SDL video
    driver when no display; joystick events also while another window, such as the MuJoCo viewer,
    has focus). Returns the pygame module."""
    tc.hide_pygame_banner()
    if not mujoco_rendering.has_display():
        os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
    os.environ.setdefault("SDL_JOYSTICK_ALLOW_BACKGROUND_EVENTS", "1")
    with warnings.catch_warnings():  # pygame 2.6 imports the deprecated pkg_resources
        warnings.filterwarnings("ignore", message="pkg_resources is deprecated", category=UserWarning)
        import pygame

    pygame.display.init()
    pygame.joystick.init()
    return pygame


def list_controllers() -> list[dict]:
    """Detected controllers: ``[{index, name, guid, axes, buttons, layout}]`` (may be empty)."""
    pygame = init_pygame()
    out = []
    for i in range(pygame.joystick.get_count()):
        js = pygame.joystick.Joystick(i)
        out.append({"index": i, "name": js.get_name(), "guid": js.get_guid(), "axes": js.get_numaxes(),
                    "buttons": js.get_numbuttons(), "layout": detect_layout(js.get_name()).name})
    return out


class GamepadTeleop:
    """Joint-space gamepad input source (see ``teleop_common`` for the interface).

    Stick and button state is tracked from pygame's event queue (JOYAXISMOTION, JOYBUTTONDOWN/UP),
    so synthetic events posted with ``pygame.event.post`` drive it exactly like a device.

    Args:
        layout: ``"auto"`` (from the controller's name), ``"ds4"`` or ``"xbox"``.
        dead_zone: stick/trigger dead zone, fraction of full deflection.
        joystick_index: which detected controller to use.
        require_device: raise when no controller is connected (``False``: tests with synthetic
            events; ``layout="auto"`` then means xbox).
        speeds, max_step_rad: joint speeds (rad/s) and the per-step safety cap (rad).
    Raises:
        TeleopUnavailable: no controller (with ``require_device``), or a bad ``joystick_index``.
        ValueError: unknown layout name.
    """

    def __init__(self, layout: str = "auto", dead_zone: float = DEFAULT_DEAD_ZONE, joystick_index: int = 0,
                 require_device: bool = True, speeds=tc.JOINT_SPEED_RAD_S,
                 max_step_rad: float = tc.MAX_TARGET_STEP_RAD):
        if layout != "auto" and layout not in LAYOUTS:
            raise ValueError(f"Unknown gamepad layout {layout!r}; choose auto, {', '.join(LAYOUTS)}")
        self.pygame = init_pygame()
        count = self.pygame.joystick.get_count()
        self.joystick = None
        if count == 0 and require_device:
            raise tc.TeleopUnavailable(
                "No gamepad detected (pygame/SDL sees 0 joysticks). Connect a DualShock 4 or Xbox "
                "controller by USB or pair it over Bluetooth, check it with `python teleop_gamepad.py`, "
                "or record headless with --input scripted."
            )
        if count > 0:
            if not 0 <= joystick_index < count:
                raise tc.TeleopUnavailable(f"Gamepad index {joystick_index} not available; {count} detected")
            self.joystick = self.pygame.joystick.Joystick(joystick_index)
            self.joystick.init()
        name = self.joystick.get_name() if self.joystick is not None else ""
        self.layout = detect_layout(name) if layout == "auto" else LAYOUTS[layout]
        self.dead_zone = dead_zone
        self.speeds = np.asarray(speeds, dtype=np.float64)
        self.max_step_rad = max_step_rad
        self._axis_names = {i: n for n, i in self.layout.axes.items()}
        self._button_names = {i: n for n, i in self.layout.buttons.items()}
        self.axes: dict[str, float] = {"l2": self.layout.trigger_rest, "r2": self.layout.trigger_rest}
        self.buttons: set[str] = set()
        self._events: list[str] = []
        self._target = u.home_pose_rad()

    def _pump(self) -> None:
        """Drain pygame's event queue into the stick/button state and the event list."""
        pg = self.pygame
        for ev in pg.event.get():
            if ev.type == pg.JOYAXISMOTION:
                name = self._axis_names.get(ev.axis)
                if name is not None:
                    self.axes[name] = float(ev.value)
            elif ev.type == pg.JOYBUTTONDOWN:
                name = self._button_names.get(ev.button)
                if name is not None:
                    self.buttons.add(name)
                    if name in BUTTON_EVENTS:
                        self._events.append(BUTTON_EVENTS[name])
            elif ev.type == pg.JOYBUTTONUP:
                self.buttons.discard(self._button_names.get(ev.button))
            elif ev.type == pg.JOYDEVICEREMOVED:
                print("warning: gamepad disconnected; sticks read as centred", file=sys.stderr)
                self.axes = {"l2": self.layout.trigger_rest, "r2": self.layout.trigger_rest}
                self.buttons.clear()

    # input-source interface ---------------------------------------------------------------
    def reset(self, q_rad) -> None:
        """Continue from joint targets ``q_rad`` (6,), MuJoCo radians."""
        self._target = u.clip_to_joint_limits(q_rad)

    def velocity(self) -> np.ndarray:
        """Current joint velocities (6,) rad/s from the sticks and buttons."""
        self._pump()
        return gamepad_velocity(self.axes, self.buttons, self.dead_zone, self.speeds, self.layout.trigger_rest)

    def command(self, dt: float = 1.0 / u.CONTROL_HZ) -> np.ndarray:
        """Advance the targets by the sticks for ``dt`` seconds; (6,) float64 MuJoCo radians."""
        wanted = tc.integrate_velocity(self._target, self.velocity(), dt)
        self._target = tc.safe_joint_targets(wanted, self._target, self.max_step_rad)
        return self._target.copy()

    def poll_events(self) -> list[str]:
        """Episode-control events (Cross/Circle/Options) since the last call, oldest first."""
        self._pump()
        out, self._events = self._events, []
        return out

    def close(self) -> None:
        if self.joystick is not None:
            self.joystick.quit()
            self.joystick = None


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--layout", default="auto", choices=("auto", *LAYOUTS), help="button/axis numbering")
    parser.add_argument("--dead-zone", type=cli_args.float_range(0.0, 1.0), default=DEFAULT_DEAD_ZONE, help="stick dead zone (0..1)")
    parser.add_argument("--index", type=cli_args.nonneg_int, default=0, help="which controller (see the list printed first)")
    parser.add_argument("--list", action="store_true", help="only list the detected controllers")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    controllers = list_controllers()
    print(f"{len(controllers)} controller(s) detected")
    for c in controllers:
        print(f"  [{c['index']}] {c['name']}  axes={c['axes']} buttons={c['buttons']} layout={c['layout']} guid={c['guid']}")
    if args.list:
        return 0
    if not controllers:
        print("error: no gamepad detected; connect one (USB or Bluetooth) and run again", file=sys.stderr)
        return 1
    teleop = GamepadTeleop(layout=args.layout, dead_zone=args.dead_zone, joystick_index=args.index)
    print(f"layout: {teleop.layout.name}. Commanded joints in LeRobot units (degrees, gripper 0..100); "
          "Options/Start or Ctrl-C quits.")
    js = teleop.joystick

    def status(cmd):
        axes = [round(js.get_axis(i), 2) for i in range(js.get_numaxes())]
        buttons = [i for i in range(js.get_numbuttons()) if js.get_button(i)]
        return f"axes={axes} buttons={buttons} joints=[{' '.join(f'{v:6.1f}' for v in cmd)}]"

    tc.print_commands(teleop, 1.0 / u.CONTROL_HZ, status)
    return 0


if __name__ == "__main__":
    sys.exit(main())
