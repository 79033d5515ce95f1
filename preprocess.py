"""Crop the faces of a data set into an HDF5 cache: `python preprocess.py dataset=affectnet dataset.root=DIR`."""

import hydra
from omegaconf import DictConfig

import affectexp.config  # noqa: F401  (registers the config schemas)


@hydra.main(version_base="1.3", config_path="conf", config_name="preprocess")
def main(cfg: DictConfig) -> int:
    from affectexp.tasks.preprocess import run_preprocess
    from affectexp.errors import exit_on_interrupt, exit_on_user_error

    with exit_on_user_error(), exit_on_interrupt():
        return run_preprocess(cfg).faces_written


if __name__ == "__main__":
    from pathlib import Path

    from affectexp.pipelines.contract import use_container_contract

    use_container_contract("preprocess", Path(__file__).resolve().parent / "conf")  # inside SageMaker only
    main()
