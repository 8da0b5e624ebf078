"""TF Serving's REST JSON: parsing requests and writing responses (its `util/json_tensor`)."""
