"""Model builders. Each is a function (input_shape, num_classes, outputs, **config) -> keras.Model,
named by `_target_` in conf/model/<name>.yaml: a new model is one file and one function.
The function's annotated keyword arguments are its config schema (affectexp/targets.py); the
model takes uint8 faces as stored (layers.normalized_input) and ends in layers.output_heads
(`outputs`: the head configuration, conf/head/)."""

# What the training code passes every builder; they are not part of the config.
BUILDER_ARGUMENTS = ("input_shape", "num_classes", "outputs")
