"""KServe's Python model server for one SavedModel signature (run in .venv-peers, not .venv).

The predictor is the custom TensorFlow `kserve.Model` a KServe user writes: it loads the SavedModel
with `tf.saved_model.load`, calls the signature eagerly, and answers
- v1 REST (`POST /v1/models/<name>:predict`, `{"instances": [...]}`) in TF Serving's row format,
  `{"predictions": [{"<output>": row, ...}]}`, with the rows left as numpy arrays: KServe's v1
  endpoint renders its answer with orjson's numpy option, the fastest encoding it offers (a
  `.tolist()` would spell each float32 as a float64 and cost KServe time);
- Open Inference Protocol `ModelInfer` over gRPC with one `InferOutput` per signature output,
  numpy-backed, which KServe sends as `raw_output_contents`.

`kserve.ModelServer` runs it with one worker and its default front ends and flags.

Example (from the repository root):
    .venv-peers/bin/python -m benchmarks.peers.kserve_server --model_name=unet \\
        --model_dir=models/unet/1 --http_port=8080 --grpc_port=8081
"""

from __future__ import annotations

import argparse
import sys

import kserve
import numpy as np
from kserve.protocol.infer_type import InferOutput, InferRequest, InferResponse

from common.quiet import import_tensorflow

# Open Inference Protocol datatype names of the dtypes a SavedModel signature returns here.
_OIP_DATATYPES = {np.dtype(np.float32): "FP32", np.dtype(np.int64): "INT64"}


class SavedModelPredictor(kserve.Model):
    """One signature of a TF2 SavedModel, behind KServe's v1 REST and OIP gRPC handlers."""

    def __init__(self, name: str, model_dir: str, signature_name: str):
        super().__init__(name)
        self.model_dir, self.signature_name = model_dir, signature_name
        self.load()

    def load(self) -> bool:
        self._tf = import_tensorflow()
        # The loaded object owns the signature's variables: keep it alive with the signature.
        self._saved_model = self._tf.saved_model.load(self.model_dir)
        self._signature = self._saved_model.signatures[self.signature_name]
        inputs = self._signature.structured_input_signature[1]
        if len(inputs) != 1:
            raise ValueError(f"expected a one-input signature, got inputs {sorted(inputs)}")
        self._input_name = next(iter(inputs))
        self.ready = True
        return self.ready

    def _run(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        outputs = self._signature(**{self._input_name: self._tf.constant(batch)})
        return {name: tensor.numpy() for name, tensor in outputs.items()}

    def predict(self, payload, headers=None):
        if isinstance(payload, InferRequest):
            batch = payload.inputs[0].as_numpy()
            outputs = self._run(batch)
            infer_outputs = [
                InferOutput(name, list(array.shape), _OIP_DATATYPES[array.dtype], data=array)
                for name, array in sorted(outputs.items())
            ]
            return InferResponse(payload.id, self.name, infer_outputs)
        batch = np.asarray(payload["instances"], dtype=np.float32)
        outputs = self._run(batch)
        rows = [{name: array[i] for name, array in outputs.items()} for i in range(len(batch))]
        return {"predictions": rows}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], parents=[kserve.model_server.parser]
    )
    parser.add_argument("--model_dir", required=True, help="a SavedModel version folder")
    parser.add_argument("--signature_name", default="serving_default")
    args, _ = parser.parse_known_args(argv)
    model = SavedModelPredictor(args.model_name, args.model_dir, args.signature_name)
    kserve.ModelServer(
        http_port=args.http_port, grpc_port=args.grpc_port, workers=args.workers
    ).start([model])
    return 0


if __name__ == "__main__":
    sys.exit(main())
