"""A one-page evaluation report for simulation runs (``--report DIR`` of the run scripts).

Writes into ``DIR``:
    summary.json         the run summary (rollout_utils.summarize) plus per-step actions
    report.html          one page: success rate with its 95% CI, return histogram, per-episode
                         table with an embedded animated preview of each episode (a looping WebP,
                         at most PREVIEW_FRAMES frames PREVIEW_WIDTH px wide, from its video: about
                         20 KB each) and links to the videos, block start positions coloured by
                         outcome (top-down), per-joint action traces of a success and a failure
    returns.png, block_starts.png, action_traces.png   the figures the page shows

Usage from a script:
    report = EvalReport()                       # collect while running
    report.add_step(episode_index, action_rad)  # every env step
    write_report(out_dir, summary, report.actions)
"""

from __future__ import annotations

import base64
import html
import io
import os
from pathlib import Path

import numpy as np

from so101_sim import rollout_utils as ru
from so101_sim import so101_mujoco_utils as u


class EvalReport:
    """Collects the per-step actions (MuJoCo radians) of each episode for :func:`write_report`."""

    def __init__(self) -> None:
        self.actions: dict[int, list[np.ndarray]] = {}

    def add_step(self, episode: int, action) -> None:
        """Record one (6,) action of ``episode`` (MuJoCo radians)."""
        self.actions.setdefault(episode, []).append(np.asarray(action, dtype=np.float64).copy())


#: Animated previews in report.html: at most this many frames, evenly spaced over the episode ...
PREVIEW_FRAMES = 40
#: ... this many pixels wide, each shown for PREVIEW_FRAME_MS (a time-lapse of the episode).
PREVIEW_WIDTH = 160
PREVIEW_FRAME_MS = 150


def episode_preview(video, max_frames: int = PREVIEW_FRAMES, width: int = PREVIEW_WIDTH) -> bytes | None:
    """A small looping animated WebP of an episode video (mp4): at most ``max_frames`` frames
    evenly spaced over it (the first and last included), scaled to ``width`` pixels wide; None when
    the video cannot be read. For report.html, which embeds it as a data URI."""
    import imageio.v3 as iio
    from PIL import Image

    try:
        frames = iio.imread(video, plugin="pyav")
    except Exception:  # noqa: BLE001  (missing / unreadable video: the report just has no preview)
        return None
    if len(frames) == 0:
        return None
    idx = np.unique(np.linspace(0, len(frames) - 1, min(max_frames, len(frames))).round().astype(int))
    h = max(1, round(width * frames.shape[1] / frames.shape[2]))
    images = [Image.fromarray(frames[i]).resize((width, h), Image.BILINEAR) for i in idx]
    buf = io.BytesIO()
    images[0].save(buf, format="WEBP", save_all=True, append_images=images[1:], duration=PREVIEW_FRAME_MS, loop=0,
                   quality=50, method=4)
    return buf.getvalue()


def _figures(out: Path, summary: dict, actions: dict[int, list[np.ndarray]]) -> dict[str, str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    eps = summary["per_episode"]
    files = {}

    fig, ax = plt.subplots(figsize=(5, 3))
    rets = [e["return"] for e in eps]
    ok = [e["return"] for e in eps if e["success"]]
    bad = [e["return"] for e in eps if not e["success"]]
    bins = np.linspace(min(rets), max(rets) + 1e-6, 15) if rets else 10
    ax.hist([ok, bad], bins=bins, stacked=True, color=["tab:green", "tab:red"], label=["success", "failure"])
    ax.set_xlabel("episode return")
    ax.set_ylabel("episodes")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "returns.png", dpi=100)
    plt.close(fig)
    files["returns"] = "returns.png"

    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    starts = np.array([e["block_start"][:2] for e in eps]) if eps else np.zeros((0, 2))
    success = np.array([e["success"] for e in eps], dtype=bool)
    if len(starts):
        ax.scatter(starts[success, 0], starts[success, 1], c="tab:green", label="success", s=30)
        ax.scatter(starts[~success, 0], starts[~success, 1], c="tab:red", marker="x", label="failure", s=40)
    ang = np.radians(np.linspace(*u.BLOCK_ANGLE_RANGE_DEG, 50))
    for r in u.BLOCK_DISTANCE_RANGE:
        ax.plot(-r * np.sin(ang), r * np.cos(ang), color="0.7", lw=1)
    ax.plot(0, 0, "ks", label="robot base")
    ax.set_aspect("equal")
    ax.set_xlabel("x (m)")
    ax.set_ylabel("y (m)")
    ax.set_title("block start positions (top view)")
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "block_starts.png", dpi=100)
    plt.close(fig)
    files["block_starts"] = "block_starts.png"

    picks = []
    for want in (True, False):
        idx = next((i for i, e in enumerate(eps) if bool(e["success"]) == want and actions.get(i)), None)
        if idx is not None:
            picks.append((idx, "success" if want else "failure"))
    if picks:
        fig, axes = plt.subplots(2, 3, figsize=(11, 5.5), sharex=True)
        for idx, label in picks:
            traj = u.mujoco_to_lerobot(np.array(actions[idx]))
            t = np.arange(len(traj)) / u.CONTROL_HZ
            for j, ax in enumerate(axes.flat):
                ax.plot(t, traj[:, j], label=f"episode {idx} ({label})",
                        color="tab:green" if label == "success" else "tab:red")
                ax.set_title(u.JOINT_NAMES[j] + (" (0..100)" if j == u.GRIPPER_INDEX else " (deg)"), fontsize=9)
        for ax in axes[1]:
            ax.set_xlabel("time (s)")
        axes[0, 0].legend(fontsize=8)
        fig.suptitle("commanded actions, LeRobot units")
        fig.tight_layout()
        fig.savefig(out / "action_traces.png", dpi=100)
        plt.close(fig)
        files["action_traces"] = "action_traces.png"
    return files


def write_report(out_dir, summary: dict, actions: dict[int, list[np.ndarray]] | None = None) -> Path:
    """Write summary.json, the figures and report.html into ``out_dir``; returns the HTML path.

    Args:
        summary: a dict from ``rollout_utils.summarize`` (episodes need ``block_start`` and may
            have ``video``).
        actions: episode index -> list of (6,) actions in MuJoCo radians (optional).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    actions = actions or {}
    data = dict(summary)
    data["actions_rad"] = {str(k): np.array(v).tolist() for k, v in actions.items()}
    ru.write_json_atomic(out / "summary.json", data)
    figs = _figures(out, summary, actions)
    eps = summary["per_episode"]
    lo, hi = summary["success_rate_ci95"]
    rows = []
    for i, e in enumerate(eps):
        video = ru.resolve_repo_path(e["video"]) if e.get("video") else None  # summaries: relative to the repo root
        link = f'<a href="{html.escape(os.path.relpath(video, out))}">mp4</a>' if video else "-"
        anim = episode_preview(video) if video else None
        preview = (f'<img class="anim" alt="episode {i}" src="data:image/webp;base64,{base64.b64encode(anim).decode()}">'
                   if anim else "-")
        start = ", ".join(f"{v:.3f}" for v in e["block_start"][:2])
        outcome = '<td class="ok">success</td>' if e["success"] else '<td class="bad">failure</td>'
        rows.append(f"<tr><td>{i}</td><td>{e['seed']}</td>{outcome}<td>{e['return']:.1f}</td>"
                    f"<td>{e['length']}</td><td>({start})</td><td>{preview}</td><td>{link}</td></tr>")
    imgs = "".join(f'<img src="{f}" alt="{k}">' for k, f in figs.items())
    n_unstable = summary.get("unstable_episodes", 0)
    unstable_note = (f"<b>{n_unstable} episode(s) ended on a simulator divergence</b> (sim_unstable);\n"
                     if n_unstable else "")
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>{html.escape(summary['policy'])} evaluation</title>
<style>body{{font-family:sans-serif;max-width:1150px;margin:20px auto}}table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:3px 8px;text-align:right}}.ok{{color:#1a7f37}}.bad{{color:#c62828}}
img{{max-width:100%;margin:6px;border:1px solid #eee}}img.anim{{margin:0;border:0}}.big{{font-size:2em}}</style></head><body>
<h1>{html.escape(summary['policy'])} on {html.escape(str(summary.get('env_id', 'the SO-101 pick-up task')))}</h1>
<p class="big">success rate <b>{summary['success_rate']:.0%}</b>
({sum(bool(e['success']) for e in eps)}/{len(eps)} episodes, 95% CI {lo:.0%}-{hi:.0%})</p>
<p>mean return {summary['mean_return']:.1f}, mean length {summary['mean_length']:.0f} steps at {u.CONTROL_HZ:.0f} Hz;
{unstable_note}seeds {eps[0]['seed'] if eps else '-'}..{eps[-1]['seed'] if eps else '-'}</p>
{imgs}
<h2>Episodes</h2><table><tr><th>#</th><th>seed</th><th>outcome</th><th>return</th><th>steps</th>
<th>block start x, y (m)</th><th>preview</th><th>video</th></tr>{''.join(rows)}</table>
</body></html>"""
    path = out / "report.html"
    tmp = path.with_suffix(".html.tmp")
    tmp.write_text(page)
    os.replace(tmp, path)
    return path


def finish_run(args, summary: dict, report: EvalReport) -> None:
    """End of a policy-running script: write ``--summary-json`` and the ``--report`` page if asked,
    then print the one-line result (success rate with its 95% CI, mean return, mean length, and
    ``unstable N`` when N > 0 episodes ended on a simulator divergence)."""
    if args.summary_json:
        ru.write_json_atomic(args.summary_json, summary)
    if args.report:
        print(f"report -> {write_report(args.report, summary, report.actions)}")
    eps = summary["per_episode"]
    lo, hi = summary["success_rate_ci95"]
    print(f"{summary['policy']}: success {summary['success_rate']:.0%} ({sum(bool(e['success']) for e in eps)}/"
          f"{len(eps)}, 95% CI {lo:.0%}-{hi:.0%}), mean return {summary['mean_return']:.1f}, "
          f"mean length {summary['mean_length']:.0f} steps"
          + (f", unstable {summary['unstable_episodes']}" if summary.get("unstable_episodes") else "")
          + (f"; summary -> {args.summary_json}" if args.summary_json else ""))
