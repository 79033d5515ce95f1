"""The entry tasks, one module each, the only code that reads the composed config:
preprocess (preprocess.py), train (train.py: a run, or a job of a sweep), sweep (its Hydra
callback: the sweep's parent run), search (train.py tuner=...: a KerasTuner search) and
evaluate (evaluate.py)."""
