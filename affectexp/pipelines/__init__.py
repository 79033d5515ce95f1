"""Running the tasks as a pipeline: SageMaker's container contract (contract), the steps' shared
overrides (steps), the MLflow Project's pipeline (mlproject) and the SageMaker Pipeline (sagemaker)."""
