"""Model builders. Each is a function (input_shape, num_classes, **config) -> keras.Model,
named by `_target_` in conf/model/<name>.yaml: a new model is one file and one function.
The function's annotated keyword arguments are its config schema (schema.py); the model
takes uint8 faces as stored (layers.normalized_input) and ends in layers.classifier_head."""
