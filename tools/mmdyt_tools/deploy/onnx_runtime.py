"""An exported model run by ONNX Runtime or OpenVINO, with its inputs
checked against the shape it was exported for."""
import json
from typing import Dict, List, Optional, Sequence

import numpy as np

from mmdyt_tools.deploy.onnx_export import METADATA_KEY

#: Runtimes :class:`ExportedModel` runs a graph with.
RUNTIMES = ('ort', 'openvino')

#: OpenVINO's inference precisions (``INFERENCE_PRECISION_HINT``).
OPENVINO_PRECISIONS = ('f32', 'bf16')


def read_metadata(path: str) -> dict:
    """What :func:`~onnx_export.export_onnx` stored in the file (the config,
    the task, the input shape, ...); empty for a file exported otherwise."""
    import onnx
    model = onnx.load(path, load_external_data=False)
    for entry in model.metadata_props:
        if entry.key == METADATA_KEY:
            return json.loads(entry.value)
    return {}


def _input_spec(path: str):
    """Name, shape (None for an open dimension) and element type of the
    graph's one input."""
    import onnx
    graph = onnx.load(path, load_external_data=False).graph
    initializers = {t.name for t in graph.initializer}
    inputs = [i for i in graph.input if i.name not in initializers]
    if len(inputs) != 1:
        raise ValueError(f'{path}: expected a graph with one input, it has '
                         f'{[i.name for i in inputs]}')
    tensor = inputs[0].type.tensor_type
    shape = tuple(d.dim_value if d.HasField('dim_value') else None
                  for d in tensor.shape.dim)
    dtype = onnx.helper.tensor_dtype_to_np_dtype(tensor.elem_type)
    return inputs[0].name, shape, np.dtype(dtype)


class ExportedModel:
    """An ONNX file loaded into a runtime.

    Args:
        path (str): The ``.onnx`` file.
        runtime (str): ``'ort'`` (ONNX Runtime, CPU execution provider) or
            ``'openvino'`` (OpenVINO, CPU plugin, float32 inference
            precision: on CPUs with bfloat16 units OpenVINO would otherwise
            compute in bfloat16). Defaults to ``'ort'``.
        threads (int, optional): Intra-op threads; None for the runtime's
            default. Defaults to None.
        precision (str): OpenVINO's inference precision, ``'f32'`` or
            ``'bf16'`` (its default on CPUs with bfloat16 units: the graph's
            float32 weights and activations computed in bfloat16). Defaults
            to ``'f32'``.

    Examples:
        >>> model = ExportedModel('seg.onnx', 'openvino')
        >>> logits, = model(inputs)  # inputs: float32 (B, 3, H, W)
    """

    def __init__(self, path: str, runtime: str = 'ort',
                 threads: Optional[int] = None, precision: str = 'f32'):
        if runtime not in RUNTIMES:
            raise ValueError(f'runtime must be one of {RUNTIMES}, got '
                             f'{runtime!r}')
        if precision not in OPENVINO_PRECISIONS or (
                runtime == 'ort' and precision != 'f32'):
            raise ValueError(
                f'precision must be one of {OPENVINO_PRECISIONS} for '
                f"OpenVINO and 'f32' for ONNX Runtime, got {precision!r} "
                f'for {runtime!r}')
        self.path = path
        self.runtime = runtime
        self.metadata = read_metadata(path)
        self.input_name, self.input_shape, self.input_dtype = \
            _input_spec(path)
        if runtime == 'ort':
            import onnxruntime as ort
            options = ort.SessionOptions()
            if threads:
                options.intra_op_num_threads = threads
                options.inter_op_num_threads = 1
            self._session = ort.InferenceSession(
                path, options, providers=['CPUExecutionProvider'])
            self.output_names = [o.name for o in self._session.get_outputs()]
        else:
            import openvino as ov
            config = {'INFERENCE_PRECISION_HINT': precision,
                      'PERFORMANCE_HINT': 'LATENCY'}
            if threads:
                config['INFERENCE_NUM_THREADS'] = threads
            self._compiled = ov.Core().compile_model(path, 'CPU', config)
            self.output_names = [
                o.get_any_name() for o in self._compiled.outputs
            ]

    def expected_shape(self) -> str:
        """The input shape the graph takes, ``B`` for an open batch."""
        dims = [str(d) if d is not None else ('B' if i == 0 else '?')
                for i, d in enumerate(self.input_shape)]
        return '(' + ', '.join(dims) + ')'

    def check_input(self, array: np.ndarray) -> None:
        """Raise a ValueError naming the expected shape or dtype if
        ``array`` does not fit the graph's input."""
        if array.dtype != self.input_dtype:
            raise ValueError(
                f'{self.path} takes {self.input_dtype} inputs of shape '
                f'{self.expected_shape()}, got {array.dtype}')
        fits = array.ndim == len(self.input_shape) and all(
            want is None or want == got
            for want, got in zip(self.input_shape, array.shape))
        if not fits:
            hint = ''
            if array.ndim == len(self.input_shape):
                hint = (' (export again with --shape/--batch, or with '
                        '--dynamic-batch for other batch sizes)')
            raise ValueError(
                f'{self.path} was exported for inputs of shape '
                f'{self.expected_shape()}, got {tuple(array.shape)}{hint}')

    def __call__(self, array) -> List[np.ndarray]:
        """Run the graph on one input (an array or a CPU tensor); its
        outputs, in graph order."""
        if not isinstance(array, np.ndarray):
            array = array.detach().cpu().numpy()
        self.check_input(array)
        if self.runtime == 'ort':
            return self._session.run(None, {self.input_name: array})
        result = self._compiled(array)
        return [np.asarray(result[out]) for out in self._compiled.outputs]

    def named(self, array) -> Dict[str, np.ndarray]:
        """:meth:`__call__`'s outputs by name."""
        return dict(zip(self.output_names, self(array)))


def run_in_batches(model: ExportedModel,
                   array: np.ndarray) -> List[np.ndarray]:
    """Run ``model`` on ``array``, in chunks of the exported batch if it is
    fixed and ``array`` holds a multiple of it; outputs concatenated."""
    batch = model.input_shape[0]
    if batch is None or array.shape[0] == batch or array.shape[0] % batch:
        return model(array)
    chunks = [model(array[i:i + batch])
              for i in range(0, array.shape[0], batch)]
    return [np.concatenate(parts) for parts in zip(*chunks)]


#: The metadata :func:`describe` shows.
DESCRIBED = ('task', 'variant', 'shape', 'batch')


def describe(metadata: dict, keys: Sequence[str] = DESCRIBED) -> str:
    """A one-line summary of an export's metadata."""
    return ', '.join(f'{k}={metadata[k]}' for k in keys if k in metadata)
