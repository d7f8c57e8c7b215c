"""The shipped checkpoints, one folder each, installed as the data-only package
``neuralenvs_checkpoints`` (see ``pyproject.toml`` here); ``neuralenvs.registry`` lists them."""
