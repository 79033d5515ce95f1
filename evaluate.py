"""Evaluate a saved model on any cache, classes matched by name:
`python evaluate.py model_uri=runs:/<run id>/model cache.size=48 classes=basic5`."""

import hydra
from omegaconf import DictConfig

import affectexp.config  # noqa: F401  (registers the config schemas)


@hydra.main(version_base="1.3", config_path="conf", config_name="evaluate")
def main(cfg: DictConfig) -> float:
    from affectexp.errors import exit_on_user_error
    from affectexp.tasks.evaluate import evaluate

    with exit_on_user_error():
        return evaluate(cfg)


if __name__ == "__main__":
    from pathlib import Path

    from affectexp.pipelines.contract import use_container_contract

    use_container_contract("evaluate", Path(__file__).resolve().parent / "conf")  # inside SageMaker only
    main()
