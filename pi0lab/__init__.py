"""pi0lab: reinforcement-learning fine-tuning of flow-matching VLA policies (pi0), Jupyter first.

Layers (dependencies point downward):
    lab -> train -> runtime -> (models, envs) -> (flow, rl)
"""

__version__ = "0.1.0"
