"""`vipa demo`: a Gradio app to try a model in the browser, and its `segment` API endpoint.

Upload or pick an image, type one phrase per line, and see every phrase's
mask over the image; tick the box to see the VEG relevance maps with the
retrieved tokens boxed. The button's event is the programmatic endpoint
``segment`` (image + text in, overlay + the JSON of ``POST /predict`` out),
so ``gradio_client`` scripts can call it.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from vipa.errors import VipaError
from vipa.inference.predict import Segmentation, segment
from vipa.inference.runtime import Runtime
from vipa.serving.codec import result_json
from vipa.viz import draw_heatmap, draw_overlays

API_NAME = "segment"


def phrases_of(text: str) -> list[str]:
    """One phrase per non-empty line (a comma-free convention: phrases contain commas)."""
    return [line.strip() for line in str(text or "").splitlines() if line.strip()]


def examples(count: int = 4) -> list[list[Any]]:
    """``[image path, phrases]`` from the built-in synthetic set's val split (works offline)."""
    from vipa.data.index import open_dataset
    from vipa.data.synthetic import ensure_synthetic

    index = open_dataset("synthetic", ensure_synthetic())
    by_image: dict[str, list[str]] = {}
    for sample in index.samples("val"):
        by_image.setdefault(str(index.image_dir / sample.file_name), []).append(sample.text)
        if len(by_image) > count:
            break
    return [[path, "\n".join(texts)] for path, texts in list(by_image.items())[:count]]


def build_demo(runtime: Runtime, threshold: float = 0.5, example_rows: list | None = None):  # noqa: ANN201
    """The Gradio Blocks app over ``runtime``."""
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # nothing leaves the machine
    import gradio as gr

    def run(image: np.ndarray | None, text: str, warn: bool = True) -> list[Segmentation]:
        if image is None:
            raise gr.Error("give an image (upload one or pick an example)")
        phrases = phrases_of(text)
        for note in filter(None, map(runtime.unknown_words_note, phrases if warn else [])):
            gr.Warning(note)  # one line per phrase, above the result
        try:
            return segment(runtime, np.asarray(image, dtype=np.uint8)[..., :3], phrases,
                           threshold)
        except VipaError as error:
            raise gr.Error(str(error)) from None

    def segment_api(image: np.ndarray | None, text: str) -> tuple[np.ndarray, dict]:
        found = run(image, text)
        overlay = draw_overlays(np.asarray(image)[..., :3], [f.mask for f in found],
                                [f.text if f.present else f"{f.text}: no match" for f in found])
        return np.asarray(overlay), {"results": [result_json(f) for f in found]}

    def heatmaps(image: np.ndarray | None, text: str, show: bool) -> list:
        if not show or image is None or not phrases_of(text):
            return []
        pixels = np.asarray(image)[..., :3]
        return [(np.asarray(draw_heatmap(pixels, f.relevance, runtime.expression_size,
                                         f.text)), f.text)
                for f in run(image, text, warn=False)]

    with gr.Blocks(title="vipa: referring image segmentation") as demo:
        gr.Markdown("# vipa\nGive an image and phrases such as *the leftmost circle*, one per "
                    "line; each gets the mask of the object it refers to.")
        with gr.Row():
            with gr.Column():
                image = gr.Image(type="numpy", label="image", elem_id="vipa-image")
                text = gr.Textbox(label="phrases (one per line)", lines=3, elem_id="vipa-text")
                show = gr.Checkbox(label="show the VEG relevance map and retrieved tokens")
                button = gr.Button("Segment", variant="primary", elem_id="vipa-segment")
            with gr.Column():
                overlay = gr.Image(type="numpy", label="masks", elem_id="vipa-overlay")
                details = gr.JSON(label="results (the JSON of POST /predict)")
                maps = gr.Gallery(label="relevance maps", columns=2)
        rows = example_rows if example_rows is not None else examples()
        if rows:
            gr.Examples(rows, inputs=[image, text], label="examples from the built-in data")
        button.click(segment_api, [image, text], [overlay, details], api_name=API_NAME).then(
            heatmaps, [image, text, show], [maps], api_name=False)
    return demo


def launch(runtime: Runtime, port: int = 7860, host: str = "127.0.0.1",
           threshold: float = 0.5) -> None:
    """Serve the demo until Ctrl-C (no sharing link, no analytics: nothing leaves the machine)."""
    demo = build_demo(runtime, threshold)
    demo.queue().launch(server_name=host, server_port=port, share=False, show_error=True,
                        quiet=True)
