"""Recognise expressions with a logged model: `python predict.py model_uri=models:/affectexp@champion
inputs=photos/ output=faces.csv` (photos, folders, videos or an AffectNet-style list), or export it
(`export=tflite|saved_model`)."""

import hydra
from omegaconf import DictConfig

import affectexp.config  # noqa: F401  (registers the config schemas)


@hydra.main(version_base="1.3", config_path="conf", config_name="predict")
def main(cfg: DictConfig) -> int:
    from affectexp.errors import exit_on_user_error
    from affectexp.tasks.predict import predict

    with exit_on_user_error():
        return predict(cfg)


if __name__ == "__main__":
    main()
