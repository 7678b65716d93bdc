"""Deployment: ONNX export, INT8 quantisation and its check, the graph rewrites (see docs/design.md)."""
