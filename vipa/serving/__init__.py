"""Serving: `vipa serve` (batched HTTP on FastAPI + uvicorn) and `vipa demo` (a Gradio app).

Both run the same :class:`~vipa.inference.runtime.Runtime` as `vipa predict`
and answer with the same JSON (:mod:`vipa.serving.codec`).
"""
