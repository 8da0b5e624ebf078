"""Peer benchmark: this server and KServe side by side, serving the same SavedModel signature.

What it measures: the latency (p50, p99) of one batch-1 request on five paths, all with the same
float32 image (fixed seed) for `models/unet/<latest>`, signature `serving_default`:
- the in-process signature call (`tf.saved_model.load(...).signatures[...]`, eager), the floor;
- this server over gRPC: TF Serving's `Predict`, the image as `tensor_content`;
- KServe over gRPC: the Open Inference Protocol's `ModelInfer`, the image as `raw_input_contents`
  (and the answer as `raw_output_contents`), the binary form a KServe user picks for tensors;
- this server over REST: `POST /v1/models/unet:predict` with `{"instances": ...}`;
- KServe over REST v1: the same body to the same URL, both on one kept-alive connection.
It prints the table, then each goal (ours / KServe at most 1.00 for the REST and gRPC p50 and
p99), and writes out/bench/peers.json.

How, and why it is fair:
- Each side runs one server process with its own defaults: `python -m serving` from the main venv
  (benchmarks.serving_bench.Server), and `kserve.ModelServer` with one worker in .venv-peers
  (benchmarks.peers.kserve_server: the custom `kserve.Model` a KServe user writes for a
  SavedModel). Both load the same version folder and run the same signature.
- Before any timing, every path's answer is decoded and compared with the in-process answer; a
  mismatch beyond float32 rounding noise stops the run (tolerance: benchmarks.peers.driver.RTOL).
- After a warm-up, the five paths are timed in turn, round after round, each round starting one
  path further along, so that drift on a shared machine hits every path alike.

Where the driver runs: in the main venv. It has to launch our server with the main venv's Python
(as `Server` does, through `sys.executable`), and one client library for both servers keeps the
client's cost out of the comparison: the same grpcio and protobuf 7 serialise both gRPC requests,
and the same http.client sends the same bytes to both REST endpoints. KServe's gRPC messages are
built from the descriptor in KServe's own generated module, read once from .venv-peers (KServe
needs protobuf < 7, so its generated code cannot be imported here).

Example (after `make peers`; `make bench-peers` does both):
    .venv/bin/python -m benchmarks.peers --n 1000 --warmup 50
"""
