"""ResNet-50 v1.5 built directly with onnx.helper, with seeded random weights.

Topology follows torchvision's resnet50: a 7x7/2 stem conv (64), a 3x3/2 max
pool, four bottleneck stages of [3, 4, 6, 3] blocks (widths 64/128/256/512,
expansion 4, stride on the 3x3 conv, projection shortcut on the first block of
each stage), global average pooling and a 2048 -> 1000 fully connected layer.

Every BatchNormalization is folded into the preceding conv (weights scaled,
bias added), using seeded "running statistics", so the graph holds only Conv,
Relu, Add, MaxPool, GlobalAveragePool, Flatten and Gemm.  Weights are He
initialised; the last BN of each residual branch gets a small gamma (as with
"zero-init residual" training) so activations stay finite through 16 blocks.
"""

import numpy as np
from onnx import TensorProto, helper, numpy_helper

STAGES = [(64, 3, 1), (128, 4, 2), (256, 6, 2), (512, 3, 2)]  # width, blocks, stride
EXPANSION = 4
BN_EPS = 1e-5


class _Graph:
    """Accumulates nodes and initializers; names are generated from a counter."""

    def __init__(self, rng):
        self.rng = rng
        self.nodes, self.inits = [], []
        self.count = 0

    def _name(self, kind):
        self.count += 1
        return f"{kind}_{self.count}"

    def conv_bn(self, x, cin, cout, k, stride=1, relu=True, gamma_scale=1.0):
        """Conv(k x k, stride, 'same' padding) with a folded BatchNorm, then ReLU."""
        rng = self.rng
        w = rng.standard_normal((cout, cin, k, k)) * np.sqrt(2.0 / (cin * k * k))
        gamma = rng.uniform(0.5, 1.0, cout) * gamma_scale
        beta = rng.normal(0.0, 0.05, cout)
        mean = rng.normal(0.0, 0.05, cout)
        var = rng.uniform(0.5, 1.5, cout)
        scale = gamma / np.sqrt(var + BN_EPS)
        w_folded = (w * scale[:, None, None, None]).astype(np.float32)
        b_folded = (beta - mean * scale).astype(np.float32)
        name = self._name("conv")
        self.inits += [numpy_helper.from_array(w_folded, f"{name}.weight"),
                       numpy_helper.from_array(b_folded, f"{name}.bias")]
        pad = k // 2
        self.nodes.append(helper.make_node(
            "Conv", [x, f"{name}.weight", f"{name}.bias"], [name], name=name,
            kernel_shape=[k, k], strides=[stride, stride], pads=[pad] * 4))
        if not relu:
            return name
        return self.op("Relu", [name])

    def op(self, op_type, inputs, **attrs):
        out = self._name(op_type.lower())
        self.nodes.append(helper.make_node(op_type, inputs, [out], name=out, **attrs))
        return out

    def bottleneck(self, x, cin, width, stride):
        """One v1.5 bottleneck block: 1x1 -> 3x3 (strided) -> 1x1, plus shortcut."""
        cout = width * EXPANSION
        y = self.conv_bn(x, cin, width, 1)
        y = self.conv_bn(y, width, width, 3, stride)
        y = self.conv_bn(y, width, cout, 1, relu=False, gamma_scale=0.2)
        if stride != 1 or cin != cout:
            x = self.conv_bn(x, cin, cout, 1, stride, relu=False)
        return self.op("Relu", [self.op("Add", [y, x])])


def build(seed=50, num_classes=1000):
    """Return the ResNet-50 graph's (nodes, initializers, input_vi, output_vi)."""
    g = _Graph(np.random.default_rng(seed))
    x = g.conv_bn("input", 3, 64, 7, stride=2)
    x = g.op("MaxPool", [x], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])
    cin = 64
    for width, blocks, stride in STAGES:
        for i in range(blocks):
            x = g.bottleneck(x, cin, width, stride if i == 0 else 1)
            cin = width * EXPANSION
    x = g.op("Flatten", [g.op("GlobalAveragePool", [x])], axis=1)
    fc_w = (g.rng.standard_normal((num_classes, cin)) * np.sqrt(1.0 / cin)).astype(np.float32)
    fc_b = g.rng.normal(0.0, 0.01, num_classes).astype(np.float32)
    g.inits += [numpy_helper.from_array(fc_w, "fc.weight"),
                numpy_helper.from_array(fc_b, "fc.bias")]
    g.nodes.append(helper.make_node("Gemm", [x, "fc.weight", "fc.bias"], ["output"],
                                    name="fc", transB=1))
    inp = helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 3, 224, 224])
    out = helper.make_tensor_value_info("output", TensorProto.FLOAT, ["batch", num_classes])
    return g.nodes, g.inits, inp, out
