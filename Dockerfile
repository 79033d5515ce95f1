# The image every step of the SageMaker pipeline runs (affectexp/pipelines/sagemaker.py): the project
# in /opt/affectexp, each step's container entry point `python /opt/affectexp/<step>.py`, which reads
# SageMaker's folders and hyperparameters itself (affectexp/pipelines/contract.py).
#   docker build -t affectexp .
# Not built or run by the tests: there is no Docker daemon where they run.
FROM python:3.11-slim

ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    NO_ALBUMENTATIONS_UPDATE=1

WORKDIR /opt/affectexp
# The dependencies first, so that a change to the code alone reuses this layer.
COPY pyproject.toml README.md ./
COPY affectexp ./affectexp
# tensorflow[and-cuda]: NVIDIA's CUDA libraries for GPU training instances (the host gives the driver);
# sagemaker-mlflow: SageMaker's managed MLflow (logger.tracking_uri=arn:aws:sagemaker:...:mlflow-tracking-server/...).
RUN pip install -e . "tensorflow[and-cuda]>=2.16,<2.22" "sagemaker-mlflow>=0.5,<0.6"
COPY conf ./conf
COPY preprocess.py train.py evaluate.py predict.py MLproject ./
