"""`vipa demo`: the model in the browser (a Gradio app)."""

from __future__ import annotations

from pathlib import Path

import typer

from vipa_cli._util import app, checkpoint_option, device_option, err_console


@app.command("demo")
def demo_command(
    checkpoint: str = checkpoint_option(shared=True),
    model: Path = typer.Option(None, "--model", "-m",
                               help="Exported model (.onnx, .pt2 or TorchScript .pt) with its "
                                    "sidecar."),
    port: int = typer.Option(7860, min=1, max=65535, help="TCP port."),
    host: str = typer.Option("127.0.0.1", help="Address to bind (loopback by default)."),
    threshold: float = typer.Option(0.5, "--threshold", "--conf",
                                   help="Foreground probability threshold (--conf: the same)."),
    device: str = device_option(),
) -> None:
    """Open a browser demo: upload or pick an image, type phrases, see the masks.

    Ticking "show the VEG relevance map" draws where the model looked, with the
    retrieved tokens boxed. The app's API endpoint [bold]segment[/bold] (image +
    text in, overlay + the JSON of `vipa serve`'s /predict out) works with
    gradio_client. Examples come from the built-in data, so it works right
    after the README run.

    [bold]Example[/bold]: [cyan]vipa demo[/cyan] (the latest run's best checkpoint), then open
    http://127.0.0.1:7860
    """
    from vipa.inference.io import check_threshold
    from vipa.inference.loading import load_runtime
    from vipa.serving.demo import launch

    check_threshold(threshold)
    runtime = load_runtime(checkpoint, model, device)
    err_console.print(f"demo on http://{host}:{port} (Ctrl-C to stop)", highlight=False)
    launch(runtime, port=port, host=host, threshold=threshold)
