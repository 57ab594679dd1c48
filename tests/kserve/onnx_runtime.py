"""An MLServer runtime that serves an ONNX file with ONNX Runtime, for the KServe v2 interop
tests (MLServer is Seldon's KServe v2 / Open Inference Protocol server, from PyPI; it has no
ONNX runtime of its own, so this is the model-specific part an operator would write too).

model-settings.json:
    {"name": "tint", "implementation": "onnx_runtime.OnnxModel",
     "parameters": {"uri": "/path/model.onnx", "extra": {"output_datatype": "INT64"}}}

`output_datatype` (optional) casts every output to another type: a misbehaving server, for
the client's wrong-dtype test.
"""

import numpy as np
import onnxruntime as ort
from mlserver import MLModel
from mlserver.codecs import NumpyCodec
from mlserver.types import InferenceRequest, InferenceResponse, MetadataTensor

KSERVE_TYPES = {"tensor(float)": "FP32", "tensor(float16)": "FP16", "tensor(int64)": "INT64"}
NUMPY_TYPES = {"INT64": np.int64, "FP64": np.float64, "FP32": np.float32}


def meta(t):
    shape = [d if isinstance(d, int) else -1 for d in t.shape]
    return MetadataTensor(name=t.name, datatype=KSERVE_TYPES.get(t.type, "FP32"), shape=shape)


class OnnxModel(MLModel):
    async def load(self) -> bool:
        params = self.settings.parameters
        self.session = ort.InferenceSession(params.uri, providers=["CPUExecutionProvider"])
        extra = params.extra or {}
        self.cast = NUMPY_TYPES.get(extra.get("output_datatype", ""), None)
        self.inputs = [meta(i) for i in self.session.get_inputs()]
        self.outputs = [meta(o) for o in self.session.get_outputs()]
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        feeds = {i.name: NumpyCodec.decode_input(i).astype(np.float32) for i in payload.inputs}
        names = [o.name for o in payload.outputs] if payload.outputs else [o.name for o in self.session.get_outputs()]
        outs = self.session.run(names, feeds)
        if self.cast is not None:
            outs = [o.astype(self.cast) for o in outs]
        return InferenceResponse(
            model_name=self.name,
            outputs=[NumpyCodec.encode_output(n, o) for n, o in zip(names, outs)],
        )
