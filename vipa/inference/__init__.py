"""Inference: one runtime for checkpoints, ONNX and TorchScript; prediction, export, image I/O.

``vipa.inference.loading.load_runtime(checkpoint=... | model=...)`` gives a :class:`Runtime` that
tokenizes and runs any of the three; :func:`predict_image` and
:func:`vipa.inference.batch.predict_batch` turn its output into masks, overlays and heatmaps at
each image's own size; :func:`export_checkpoint` writes the exported files.
"""
