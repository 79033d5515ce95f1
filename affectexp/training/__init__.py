"""The training side: input pipeline, fitting, evaluation, tracking. Imports Keras."""
