"""Train and evaluate a model on a face cache: `python train.py model=simple_cnn trainer.epochs=30`."""

import hydra
from omegaconf import DictConfig

import affectexp.config  # noqa: F401  (registers the config schemas)


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> float:
    from hydra.core.hydra_config import HydraConfig

    from affectexp.errors import exit_on_interrupt, exit_on_user_error
    from affectexp.sweeps import current_sweep_job
    from affectexp.training.run import train
    from affectexp.tuning import search

    with exit_on_user_error(), exit_on_interrupt():
        if cfg.tuner:
            return search(cfg, list(HydraConfig.get().overrides.task))
        return train(cfg, current_sweep_job())


if __name__ == "__main__":
    main()
