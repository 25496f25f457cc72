"""`vipa serve`: a batched HTTP prediction service on FastAPI + uvicorn."""

from __future__ import annotations

import ipaddress
import logging
import signal
from pathlib import Path

import typer

from vipa_cli._util import (
    app,
    channels_last_option,
    checkpoint_option,
    compile_option,
    device_option,
    err_console,
    precision_option,
)

logger = logging.getLogger(__name__)


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@app.command("serve")
def serve_command(
    checkpoint: str = checkpoint_option(shared=True),
    model: Path = typer.Option(None, "--model", "-m",
                               help="Exported model (.onnx, .pt2 or TorchScript .pt) with its "
                                    "sidecar."),
    host: str = typer.Option("127.0.0.1", help="Address to bind (loopback by default)."),
    port: int = typer.Option(8000, min=0, max=65535, help="TCP port (0: any free one)."),
    max_batch_size: int = typer.Option(8, "--max-batch-size", min=1,
                                       help="Phrases per model call, across requests."),
    batch_timeout_ms: float = typer.Option(10.0, "--batch-timeout-ms", min=0,
                                           help="How long a batch waits for more requests."),
    api_key: str = typer.Option(None, "--api-key", envvar="VIPA_API_KEY",
                                help="Require 'Authorization: Bearer KEY' (also VIPA_API_KEY)."),
    max_phrases: int = typer.Option(16, "--max-phrases", min=1, help="Phrases per request."),
    max_body_mb: float = typer.Option(20.0, "--max-body-mb", min=0.001,
                                      help="Largest request body, in MB."),
    max_queued: int = typer.Option(256, "--max-queued", min=1,
                                   help="Phrases waiting before requests get 503."),
    threshold: float = typer.Option(0.5, "--threshold", "--conf",
                                   help="Foreground probability threshold (--conf: the same)."),
    device: str = device_option(),
    compile_model: bool = compile_option(),
    precision: str = precision_option(),
    channels_last: bool = channels_last_option(),
) -> None:
    """Serve predictions over HTTP: GET /health, POST /predict, GET /metrics.

    POST /predict takes a multipart form (one [bold]image[/bold] file, one or more
    [bold]text[/bold] fields) or JSON {"image": "<base64>", "texts": [...]}, and
    answers {"results": [{"text", "mask_rle", "bbox", "area", "score"}]} with
    masks at the image's size as COCO RLE; ?include=png adds a PNG per mask.
    Requests of different clients share model calls (dynamic batching).
    SIGTERM finishes the requests in flight, then exits 0. See docs/serving.md.

    [bold]Example[/bold]: [cyan]vipa serve --checkpoint runs/x/best.safetensors --port 8000[/cyan]
    """
    import uvicorn

    from vipa.inference.io import check_threshold
    from vipa.inference.loading import load_runtime
    from vipa.inference.runtime import TorchOptions
    from vipa.serving.app import Settings, create_app

    check_threshold(threshold)
    if not _loopback(host) and not api_key:
        err_console.print(f"[bold yellow]warning:[/] binding {host} without --api-key: anyone "
                          "who can reach this port can use the model", highlight=False)
    options = TorchOptions(compile_model, precision, channels_last)
    runtime = load_runtime(checkpoint, model, device, options)
    settings = Settings(max_batch_size=max_batch_size, batch_timeout_ms=batch_timeout_ms,
                        api_key=api_key, max_phrases=max_phrases, max_queued=max_queued,
                        max_body_bytes=int(max_body_mb * 1024 * 1024), threshold=threshold)
    server = uvicorn.Server(uvicorn.Config(create_app(runtime, settings), host=host, port=port,
                                           log_level="warning", timeout_graceful_shutdown=30))
    err_console.print(f"serving {checkpoint or model or 'the latest run'} on "
                      f"http://{host}:{port} (Ctrl-C or SIGTERM to stop)", highlight=False)
    # uvicorn finishes the requests in flight on SIGTERM, then re-raises the signal to the
    # handler it found: ours records it, so a requested stop exits 0 instead of by signal.
    received: list[int] = []
    signal.signal(signal.SIGTERM, lambda signum, frame: received.append(signum))
    server.run()
    if received:
        err_console.print("stopped by SIGTERM after the requests in flight", highlight=False)
