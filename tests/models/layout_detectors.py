"""Small detectors in the output layouts operators export today, built with the `onnx`
package (no weights from anywhere: their "detections" follow the image's colour), so that the
decoders can be tested on real ONNX Runtime outputs of each layout:

- `det_yolov8.onnx`: Ultralytics YOLOv8 / YOLO11 raw head, output0 [N, 4 + 3, 4]: per anchor
  centre x, y, width, height in input pixels, then class probabilities; `names` metadata as
  Ultralytics writes it.
- `det_yolov8_t.onnx`: the same, transposed ([N, 4, 4 + 3]), as some export scripts leave it.
- `det_e2e.onnx`: an end-to-end export (YOLOv10 / YOLO26 / `nms=True`): output0 [N, 8, 6]
  = x0, y0, x1, y1, score, class.
- `det_rtdetr.onnx`: Ultralytics RT-DETR: output0 [N, 4, 4 + 3], boxes centre x, y, width,
  height normalised to the input, class probabilities.
- `det_rfdetr.onnx`: RF-DETR: `dets` [N, 4, 4] normalised boxes and `labels` [N, 4, 3] logits.

All take [N, 3, 64, 64] RGB in [0, 1]. Classes: cone (orange-red images), worker (green),
car (blue); each layout reports the same four boxes (the quadrants' centres, 16×16 px) with
the class probabilities of the whole image, so every decoder must agree on them.
"""

import numpy as np
from onnx import TensorProto, helper, numpy_helper

NAMES = "{0: 'cone', 1: 'worker', 2: 'car'}"
SIDE = 64
CENTRES = [(16.0, 16.0), (48.0, 16.0), (16.0, 48.0), (48.0, 48.0)]
BOX = 16.0


def const(name, array):
    return numpy_helper.from_array(np.asarray(array, dtype=np.float32), name)


def head():
    """Nodes from `input` to `logits` [N, 3] and `probs` [N, 3], and `ones` [N, 1, 1]."""
    w = np.array([[10.0, -6.0, -6.0], [-2.0, 10.0, -4.0], [-8.0, -4.0, 10.0]], dtype=np.float32)
    b = np.array([-2.0, -3.0, -3.0], dtype=np.float32)
    nodes = [
        helper.make_node("GlobalAveragePool", ["input"], ["pooled"]),
        helper.make_node("Flatten", ["pooled"], ["flat"], axis=1),
        helper.make_node("Gemm", ["flat", "W", "B"], ["logits"]),
        helper.make_node("Sigmoid", ["logits"], ["probs"]),
        # ones of shape [N, 1, 1], to broadcast constants over the batch
        helper.make_node("ReduceMax", ["probs"], ["pmax"], axes=[1], keepdims=1),
        helper.make_node("Mul", ["pmax", "zero"], ["zeros"]),
        helper.make_node("Add", ["zeros", "one"], ["ones2"]),
        helper.make_node("Unsqueeze", ["ones2", "ax2"], ["ones"]),
    ]
    inits = [const("W", w), const("B", b), const("zero", 0.0), const("one", 1.0),
             numpy_helper.from_array(np.array([2], dtype=np.int64), "ax2")]
    return nodes, inits


def graph(name, nodes, inits, outputs):
    nodes0, inits0 = head()
    return helper.make_graph(
        nodes0 + nodes,
        name,
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, SIDE, SIDE])],
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in outputs],
        inits0 + inits,
    )


def yolov8(transposed):
    boxes = np.array([[cx for cx, _ in CENTRES], [cy for _, cy in CENTRES], [BOX] * 4, [BOX] * 4])  # [4, A]
    nodes = [
        helper.make_node("Mul", ["ones", "boxes"], ["bx"]),  # [N, 4, A]
        helper.make_node("Unsqueeze", ["probs", "ax2"], ["p3"]),  # [N, 3, 1]
        helper.make_node("Mul", ["p3", "anchors"], ["scores"]),  # [N, 3, A]
        helper.make_node("Concat", ["bx", "scores"], ["raw" if transposed else "output0"], axis=1),
    ]
    if transposed:
        nodes.append(helper.make_node("Transpose", ["raw"], ["output0"], perm=[0, 2, 1]))
    shape = ["N", 4, 7] if transposed else ["N", 7, 4]
    inits = [const("boxes", boxes[None]), const("anchors", np.ones((1, 1, 4)))]
    return graph("yolov8", nodes, inits, [("output0", shape)])


def end2end():
    rows = []
    for cls in (0, 1):
        for cx, cy in CENTRES:
            rows.append([cx - BOX / 2, cy - BOX / 2, cx + BOX / 2, cy + BOX / 2])
    cls = np.array([[0.0] * 4 + [1.0] * 4])[..., None]  # [1, 8, 1]
    nodes = [
        helper.make_node("Mul", ["ones", "rows"], ["bx"]),  # [N, 8, 4]
        helper.make_node("Gather", ["probs", "which"], ["sc"], axis=1),  # [N, 8]
        helper.make_node("Unsqueeze", ["sc", "ax2"], ["sc3"]),  # [N, 8, 1]
        helper.make_node("Mul", ["ones", "cls"], ["cl"]),  # [N, 8, 1]
        helper.make_node("Concat", ["bx", "sc3", "cl"], ["output0"], axis=2),
    ]
    inits = [const("rows", np.array(rows)[None]), const("cls", cls),
             numpy_helper.from_array(np.array([0] * 4 + [1] * 4, dtype=np.int64), "which")]
    return graph("end2end", nodes, inits, [("output0", ["N", 8, 6])])


def detr(two_outputs):
    norm = np.array([[cx / SIDE, cy / SIDE, BOX / SIDE, BOX / SIDE] for cx, cy in CENTRES])[None]  # [1, Q, 4]
    source = "logits" if two_outputs else "probs"
    nodes = [
        helper.make_node("Mul", ["ones", "norm"], ["dets" if two_outputs else "bx"]),  # [N, Q, 4]
        helper.make_node("Unsqueeze", [source, "ax1"], ["s1"]),  # [N, 1, 3]
        helper.make_node("Mul", ["s1", "queries"], ["labels" if two_outputs else "sq"]),  # [N, Q, 3]
    ]
    inits = [const("norm", norm), const("queries", np.ones((1, 4, 1))),
             numpy_helper.from_array(np.array([1], dtype=np.int64), "ax1")]
    if two_outputs:
        return graph("rfdetr", nodes, inits, [("dets", ["N", 4, 4]), ("labels", ["N", 4, 3])])
    nodes.append(helper.make_node("Concat", ["bx", "sq"], ["output0"], axis=2))
    return graph("rtdetr", nodes, inits, [("output0", ["N", 4, 7])])


def models():
    """(file name, graph, metadata) of every layout."""
    names = {"names": NAMES}
    return [
        ("det_yolov8.onnx", yolov8(False), names),
        ("det_yolov8_t.onnx", yolov8(True), names),
        ("det_e2e.onnx", end2end(), names),
        ("det_rtdetr.onnx", detr(False), names),
        ("det_rfdetr.onnx", detr(True), {}),
    ]
