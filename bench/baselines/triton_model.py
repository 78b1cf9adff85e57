"""The model.py of a Triton python-backend model that runs an ONNX file with
onnxruntime: "Triton (python backend, onnxruntime)".

bench/baselines/triton_server.py copies this file next to model.onnx into
every version directory of the Triton model repository it writes.  Triton's
dynamic batcher hands `execute` the requests it gathered (up to the config's
max_batch_size rows, after at most max_queue_delay_microseconds); the python
backend does not merge them, so this concatenates their inputs along the
batch dimension, runs ONE onnxruntime call, and splits the outputs back by
each request's row count.  Only the outputs a request asked for are returned.

The session's intra-op thread count comes from the config's parameter
`intra_op_threads` (the bench gives it the ONNX Runtime cores mlserve gets),
inter-op 1.  It runs inside Triton's python backend stub, a separate process
per instance, with bench/.venv-triton's onnxruntime and numpy.
"""

import json
import os

import numpy as np
import onnxruntime as ort
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    """One onnxruntime session of this version's model.onnx."""

    def initialize(self, args):
        config = json.loads(args["model_config"])
        threads = int(config["parameters"]["intra_op_threads"]["string_value"])
        path = os.path.join(args["model_repository"], args["model_version"], "model.onnx")
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        self.session = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
        self.inputs = [i.name for i in self.session.get_inputs()]
        self.outputs = [o.name for o in self.session.get_outputs()]

    def execute(self, requests):
        feeds = {name: [pb_utils.get_input_tensor_by_name(r, name).as_numpy() for r in requests]
                 for name in self.inputs}
        rows = [len(a) for a in feeds[self.inputs[0]]]
        merged = {name: arrays[0] if len(arrays) == 1 else np.concatenate(arrays)
                  for name, arrays in feeds.items()}
        try:
            results = dict(zip(self.outputs, self.session.run(None, merged)))
        except Exception as err:  # a run onnxruntime rejects fails every request of the batch
            error = pb_utils.TritonError(f"onnxruntime: {err}")
            return [pb_utils.InferenceResponse(error=error) for _ in requests]
        responses, start = [], 0
        for request, n in zip(requests, rows):
            wanted = request.requested_output_names() or self.outputs
            tensors = [pb_utils.Tensor(name, results[name][start:start + n]) for name in wanted
                       if name in results]
            responses.append(pb_utils.InferenceResponse(output_tensors=tensors))
            start += n
        return responses
