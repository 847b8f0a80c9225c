"""Training from the ``prepare`` cache: ``train(bundle, TrainOptions(...))``.

Import from the modules (``pipelines.training.loop``) to keep this package import cheap.
"""
