"""``accelerate launch tests/rank_state_hook.py ARGS`` (from simulation_code/): train_reinflow.py ARGS,
then every rank writes its trainable policy tensors, noise head and critic (with the normaliser
buffers) to ``$SO101_RANK_STATE_DIR/rank{r}.pt`` (tests/test_distributed_reinflow.py compares them:
rank 0 alone writes the checkpoint)."""

import os
import sys
from pathlib import Path

sys.path.insert(0, os.getcwd())

import torch  # noqa: E402

from so101_sim import train_reinflow  # noqa: E402

_finish = train_reinflow.finish


def finish(run, vec, t_start):
    _finish(run, vec, t_start)
    directory = Path(os.environ["SO101_RANK_STATE_DIR"])
    directory.mkdir(parents=True, exist_ok=True)
    state = {"policy": {n: p.detach().cpu().clone() for n, p in run.policy.model.named_parameters() if p.requires_grad},
             "noise_head": {k: v.detach().cpu().clone() for k, v in run.agent.noise_head.state_dict().items()},
             "critic": {k: v.detach().cpu().clone() for k, v in run.agent.critic.state_dict().items()}}
    torch.save(state, directory / f"rank{run.rank}.pt")


if __name__ == "__main__":  # not in the env workers (forkserver children import this file as __mp_main__)
    train_reinflow.finish = finish
    sys.exit(train_reinflow.main(sys.argv[1:]))
