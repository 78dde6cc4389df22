"""RL heads on the action expert's action-token features (RLinf recipe).

- `ValueHead`: V(s) = MLP(mean_h feats[:, h]); 1024-512-256-128-1 with ReLU at real size.
- `NoiseHead` (ReinFlow): per action token, MLP 1024-128-64-A with tanh -> log-variance squashed
  into [log s_min^2, log s_max^2] -> std = exp(logvar / 2) in [s_min, s_max].

Parameter names match RLinf's (`value_head.mlp.{0,2,4,6}`; the noise head's MLP is mapped by
the checkpoint loader) so trained heads load directly.
"""

from torch import Tensor, nn

from pi0lab.flow import bounded_std


class ValueHead(nn.Module):
    """features [B,H,W] -> value [B]; `detach` stops the critic's gradient into the expert."""

    def __init__(self, width: int, hidden: tuple[int, ...] = (512, 256, 128), detach: bool = False):
        super().__init__()
        self.detach = detach
        layers, in_dim = [], width
        for out_dim in hidden:
            layers += [nn.Linear(in_dim, out_dim), nn.ReLU()]
            in_dim = out_dim
        layers.append(nn.Linear(in_dim, 1))
        self.mlp = nn.Sequential(*layers)
        for module in self.mlp[:-1]:
            if isinstance(module, nn.Linear):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(module.bias)
        nn.init.normal_(self.mlp[-1].weight, std=0.02)
        nn.init.zeros_(self.mlp[-1].bias)

    def forward(self, features: Tensor) -> Tensor:
        pooled = features.float().mean(dim=1)  # [B,W]: mean over the action tokens
        if self.detach:
            pooled = pooled.detach()
        return self.mlp(pooled).squeeze(-1)


class NoiseHead(nn.Module):
    """features [B,H,W] -> std [B,H,A] in [std_min, std_max], one MLP applied to every action token."""

    def __init__(self, width: int, action_dim: int, std_range: tuple[float, float] = (0.08, 0.16),
                 hidden: tuple[int, ...] = (128, 64)):
        super().__init__()
        self.std_min, self.std_max = std_range
        layers, in_dim = [], width
        for out_dim in hidden:
            layers += [nn.Linear(in_dim, out_dim), nn.Tanh()]
            in_dim = out_dim
        layers.append(nn.Linear(in_dim, action_dim))
        self.mlp = nn.Sequential(*layers)

    def forward(self, features: Tensor) -> Tensor:
        return bounded_std(self.mlp(features.float()), self.std_min, self.std_max)
