"""Model builders. Each is a function (input_shape, num_classes, **config) -> keras.Model,
named by `_target_` in conf/model/<name>.yaml: a new model is one file and one function."""
