"""Environments behind one vectorised contract (DESIGN.md §6, `pi0lab.envs.base`).

    env = make_env("tabletop_spatial", num_envs=8, image_size=64, seed=0)
    obs = env.reset()                                   # or reset(task_ids=[...], init_state_ids=[...])
    obs, rewards, terminated, truncated, info = env.step(actions)   # actions [8, C, 7]

Suites: the built-in numpy tabletop (`tabletop_spatial`, `tabletop_object`, `tabletop_goal`,
`tabletop_long`, and `tabletop_pretrain`, scenes to pretrain a base on) and LIBERO (`libero_spatial`,
`libero_object`, `libero_goal`, `libero_10`, `libero_90`; needs the `[libero]` extra, imported only
when asked for).
"""

from pi0lab.envs.base import ACTION_DIM, STATE_DIM, SingleEnv, VectorEnv

TABLETOP_SUITES = ("tabletop_spatial", "tabletop_object", "tabletop_goal", "tabletop_long", "tabletop_pretrain")
LIBERO_SUITES = ("libero_spatial", "libero_object", "libero_goal", "libero_10", "libero_90")
SUITES = TABLETOP_SUITES + LIBERO_SUITES


def make_env(name: str, num_envs: int, image_size: int = 64, seed: int = 0, **options) -> VectorEnv:
    """Build a vectorised env for a suite name.

    Tabletop options: `auto_reset` (bool, default False: an ended env stays ended until reset;
    True: it resets at the chunk boundary, for evaluation), `num_workers` (0 = in-process batched
    numpy env, the default; k >= 1 = k subprocess workers), `worker_timeout_s` (subprocess only),
    `privileged_state` (bool, default False: the state-based control, not pi0; states get the things'
    true poses appended, `pi0lab.envs.tabletop.suites.privileged_state_dim(name)` wide in all).
    LIBERO names forward every option to `pi0lab.envs.libero.make_libero_env` (`privileged_state` must
    be False there).
    """
    if name in LIBERO_SUITES and options.pop("privileged_state", False):
        raise ValueError(f"privileged_state is a tabletop control; LIBERO ({name}) observations have no privileged "
                         "object poses here: set env.train.privileged_state=false and env.eval.privileged_state=false")
    if name in TABLETOP_SUITES:
        from pi0lab.envs.tabletop import make_tabletop_env

        return make_tabletop_env(name, num_envs, image_size=image_size, seed=seed, **options)
    if name in LIBERO_SUITES:
        from pi0lab.envs.libero import make_libero_env

        return make_libero_env(name, num_envs, image_size, seed, **options)
    raise ValueError(f"unknown env {name!r}; valid names: {', '.join(SUITES)}")


__all__ = ["ACTION_DIM", "STATE_DIM", "SingleEnv", "VectorEnv", "make_env", "SUITES", "TABLETOP_SUITES", "LIBERO_SUITES"]
