"""IntelliOptics edge inference service: model packages in, verified ONNX answers out."""
