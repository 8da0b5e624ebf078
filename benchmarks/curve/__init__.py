"""Latency-throughput curves: open-loop Predict load at rising rates against a running server.

Each step offers one rate for a while (Poisson or evenly spaced arrivals, sent on time whether
or not earlier answers came back) and reports the offered, sent and achieved rates, p50, p90
and p99 latency, errors by status code and the sender's own lag; the knee is the last step of
the healthy run the curve starts with (`steps.find_knee`). A table goes to stdout, JSON and a
PNG plot to --out.

Example:
    python -m benchmarks.curve --grpc 127.0.0.1:8500 --model unet --rates 10,20,40,60
    python -m benchmarks.curve --rest http://127.0.0.1:8501 --model generator \\
        --signature serve_seeds --rates 50,100,200 --seconds 8
"""
