"""ONNX export of DyT task models (``onnx_export``), running the exported
graphs with ONNX Runtime or OpenVINO (``onnx_runtime``) and wrapping them
back into the task's model for evaluation (``onnx_task``)."""
