"""A few ReinFlow PPO iterations on a toy 1-D task increase its return.

Toy task: one-step episodes, observation s ~ U(-1, 1), action a (1-D, flow space = action space),
reward -(a - (0.5 + 0.5 s))^2. The policy is a tiny flow MLP behind FlowMatchingPolicy; it starts
near a = 0, so the optimum is learnable only through the noisy chain's log-probabilities.
"""

import numpy as np
import torch
from torch import nn

torch.set_num_threads(1)

from so101_sim.reinflow_engine import ReinFlowAgent, ReinFlowConfig, RolloutData, critic_features, ppo_update, sample_chain  # noqa: E402
from so101_sim.flow_matching_policy import FlowMatchingPolicy  # noqa: E402


class ToyFlow(FlowMatchingPolicy):
    model_type = "toy"
    frame = "toy"

    def __init__(self):
        super().__init__()
        self.chunk_size = self.n_action_steps = self.action_dim = self.max_action_dim = 1
        self.num_denoise_steps = 2
        self.hidden_dim = 16
        self.device = torch.device("cpu")
        self.task = ""
        self.enc = nn.Sequential(nn.Linear(1, 16), nn.Tanh())
        self.vel = nn.Sequential(nn.Linear(16 + 2, 32), nn.Tanh(), nn.Linear(32, 1))
        self.model = nn.ModuleDict({"enc": self.enc, "vel": self.vel})
        self._h = None

    @classmethod
    def load(cls, path, **kw):
        return cls()

    def prepare_batch(self, observations, task=None):
        return {"s": torch.as_tensor(np.asarray(observations["observation.state"], np.float32))}

    def build_prefix(self, batch):
        return self.enc(batch["s"])

    def denoise_step(self, prefix, x_t, t):
        self._h = prefix[:, None, :]
        return self.vel(torch.cat([prefix, x_t[:, :, 0], t[:, None]], dim=1))[:, None, :]

    def expert_hidden(self):
        return self._h

    def to_mujoco_actions(self, x0, batch=None):
        return x0.detach().numpy()

    def trainable_parameter_groups(self, preset="all"):
        return {"all": list(self.model.parameters())}


def _target(s):
    return 0.5 + 0.5 * s


def _mean_return(agent, s, gen):
    batch = agent.policy.prepare_batch({"observation.state": s})
    a = sample_chain(agent.policy, None, batch, 2, deterministic=True, generator=gen).x[:, 0, 0].numpy()
    return float(np.mean(-(a - _target(s[:, 0])) ** 2))


def test_ppo_iterations_increase_toy_return():
    torch.manual_seed(0)
    pol = ToyFlow()
    cfg = ReinFlowConfig(num_steps=2, sigma_min=0.1, sigma_max=0.3, policy_lr=3e-3, noise_lr=1e-3, critic_lr=3e-3,
                         epochs=4, batch_size=128, clip=0.2, target_kl=None, critic_warmup_iters=0, reward_scale=1.0)
    agent = ReinFlowAgent(pol, cfg, critic_input_dim=1)
    rng = np.random.default_rng(0)
    s_eval = rng.uniform(-1, 1, (256, 1)).astype(np.float32)
    before = _mean_return(agent, s_eval, torch.Generator().manual_seed(1))
    for it in range(25):
        gen = torch.Generator().manual_seed(100 + it)
        s = rng.uniform(-1, 1, (512, 1)).astype(np.float32)
        obs = {"observation.state": s}
        acts, smp, inputs = agent.act(obs, gen)
        r = -(acts[:, 0, 0] - _target(s[:, 0])) ** 2
        feats = critic_features(obs)
        adv = r - agent.values(feats)  # one-step episodes: GAE reduces to r - V(s)
        data = RolloutData(inputs, feats, smp.chain, smp.log_prob, torch.as_tensor(adv, dtype=torch.float32),
                           torch.as_tensor(r, dtype=torch.float32))
        stats = ppo_update(agent, data, it, gen)
        assert stats["ratio_check"] <= 1e-5
    after = _mean_return(agent, s_eval, torch.Generator().manual_seed(1))
    assert after > before + 0.5 * abs(before), (before, after)
