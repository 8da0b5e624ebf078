"""Conformance harness: a version loaded by TensorFlow's C++ loader, as TF Serving loads it.

`savedmodel_check.cc` is compiled against the installed TensorFlow wheel, loads a version with
`tensorflow::LoadSavedModel` and runs every warmup record through `Session::Run` by the
SignatureDef's tensor names. See docs/conformance.md.

Usage:
    python -m export.conformance models/unet/1 --run shipped-runs/unet
"""
