"""The model bundle: written and read (safetensors + model.json + log), model.json's schema, the
resume state a partial bundle carries, and export to ONNX."""
