"""Train the LightGBM ranker, evaluate it (raw and counterfactual), export it to ONNX, write its report."""
