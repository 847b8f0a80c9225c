"""The model lifecycle: ONNX export, releases and model cards, MLflow tracking and registry."""
