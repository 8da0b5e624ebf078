"""The REST API: routes, the HTTP layer and the JSON codecs (TF Serving's REST handler)."""
