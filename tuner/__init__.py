"""The tuner: model intake (ONNX to tasks), search, job lifecycle, compile with configs.

Modules import TVM and onnx lazily, inside functions, so the service can import
them without paying for TVM at start-up.
"""
