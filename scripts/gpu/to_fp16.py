"""fp16 copy of an ONNX model for the GPU: weights and compute in fp16, inputs and outputs kept
fp32 (casts at the edges), so the engine feeds it exactly as the fp32 model.
Usage: python to_fp16.py IN.onnx OUT.onnx   (needs onnxconverter-common)"""

import sys
import warnings

import onnx
from onnxconverter_common import float16

warnings.filterwarnings("ignore")  # tiny weights flushed to the fp16 range, by design
model = onnx.load(sys.argv[1])
onnx.save(float16.convert_float_to_float16(model, keep_io_types=True), sys.argv[2])
