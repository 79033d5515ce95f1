"""Train and evaluate a model on a face cache: `python train.py model=simple_cnn trainer.epochs=30`."""

import hydra
from omegaconf import DictConfig

import affectexp.config  # noqa: F401  (registers the config schemas)


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> float:
    from hydra.core.hydra_config import HydraConfig

    from affectexp.errors import exit_on_interrupt, exit_on_user_error

    overrides = list(HydraConfig.get().overrides.task)
    with exit_on_user_error(), exit_on_interrupt():
        if cfg.tuner:
            from affectexp.tasks.search import search

            return search(cfg, overrides)
        from affectexp.tasks.train import run

        return run(cfg, overrides)


if __name__ == "__main__":
    import sys
    from pathlib import Path

    from affectexp.config import check_unchosen_groups
    from affectexp.errors import exit_on_user_error
    from affectexp.pipelines.contract import use_container_contract

    use_container_contract("train", Path(__file__).resolve().parent / "conf")  # inside SageMaker only
    with exit_on_user_error():
        check_unchosen_groups("train", sys.argv[1:])
    main()
