"""--report: the one-page evaluation report of a simulation run."""

import json
import re

import numpy as np

from so101_sim import rollout_utils as ru
from so101_sim import run_mujoco_simulation


def test_wilson_interval_matches_the_formula_and_brackets_the_rate():
    lo, hi = ru.wilson_interval(8, 10)
    p, n, z = 0.8, 10, 1.96
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    assert (lo, hi) == (centre - half, centre + half)
    assert lo < 0.8 < hi
    assert ru.wilson_interval(0, 5)[0] == 0.0 and ru.wilson_interval(5, 5)[1] == 1.0


def test_report_page_figures_and_links(tmp_path):
    out = tmp_path / "report"
    # a 26-step cap makes some of these seeded expert episodes fail: both outcomes appear
    rc = run_mujoco_simulation.main(["--model-type", "scripted", "--episodes", "4", "--seed", "0", "--headless",
                                     "--max-steps", "26", "--report", str(out)])
    assert rc == 0
    summary = json.loads((out / "summary.json").read_text())
    eps = summary["per_episode"]
    outcomes = {e["success"] for e in eps}
    assert outcomes == {True, False}, "the seeds must give a success and a failure"
    for i, e in enumerate(eps):  # one recorded action per step, in radians
        assert np.array(summary["actions_rad"][str(i)]).shape == (e["length"], 6)
    page = (out / "report.html").read_text()
    wins = sum(e["success"] for e in eps)
    assert f"<b>{wins / len(eps):.0%}</b>" in page and f"({wins}/{len(eps)} episodes" in page
    lo, hi = summary["success_rate_ci95"]
    assert f"95% CI {lo:.0%}-{hi:.0%}" in page
    links = re.findall(r'href="([^"]+\.mp4)"', page)
    assert len(links) == len(eps) and all((out / link).is_file() for link in links)
    for fig in ("returns.png", "block_starts.png", "action_traces.png"):
        assert f'src="{fig}"' in page and (out / fig).stat().st_size > 1000
    assert page.count('class="ok">success') == wins


def test_reinflow_inference_writes_the_same_report(tmp_path):
    from so101_sim import run_reinflow_inference
    from conftest import SIM_DIR

    out = tmp_path / "rep"
    rc = run_reinflow_inference.main(["--checkpoint", str(SIM_DIR / "checkpoints" / "flow_bc.pt"), "--episodes", "2",
                                      "--seed", "3", "--max-steps", "12", "--headless", "--report", str(out)])
    assert rc == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["seeds"] == [3, 4]
    for i, e in enumerate(summary["per_episode"]):
        assert np.array(summary["actions_rad"][str(i)]).shape == (e["length"], 6) and e["length"] <= 12
        assert (out / "videos" / f"episode_{i:03d}.mp4").is_file()
    wins = sum(e["success"] for e in summary["per_episode"])
    assert f"({wins}/2 episodes" in (out / "report.html").read_text()
