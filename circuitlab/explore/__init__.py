"""The patching explorer: a web page that runs the course's patching methods on any
prompts, no code. `circuitlab explore` (or `make explore`) serves it on this machine;
a Hugging Face Space serves the same app (README: "The patching explorer").

compute.py holds every number the page shows, app.py the page; `server_app` adds the
route that hands out the chapters each panel links to.
"""

from __future__ import annotations

from typing import Optional

DEFAULT_PORT = 7860


def server_app(store=None, limits=None):
    """The explorer as an ASGI app: the Gradio page at /, the chapter notebooks at /chapters/NAME."""
    import gradio as gr
    from fastapi import FastAPI, HTTPException
    from fastapi.responses import Response

    from circuitlab.course_files import chapter_files, learner_copy
    from circuitlab.explore.app import build_app

    app = FastAPI()

    @app.get("/chapters/{name}")
    def chapter(name: str):
        files = {path.name: path for path in chapter_files()}
        if name not in files:
            raise HTTPException(404, f"No chapter {name!r}; the course has {', '.join(sorted(files))}.")
        # A learner's copy (no jupytext pairing), as `circuitlab start` gives: it opens wherever it is saved.
        return Response(learner_copy(files[name]), media_type="application/x-ipynb+json",
                        headers={"Content-Disposition": f'attachment; filename="{name}"'})

    return gr.mount_gradio_app(app, build_app(store, limits), path="/")


def serve(host: str = "127.0.0.1", port: int = DEFAULT_PORT, store=None, limits=None) -> None:
    """Serve the explorer until interrupted."""
    import uvicorn

    print(f"The patching explorer: open http://{'localhost' if host in ('127.0.0.1', '0.0.0.0') else host}:{port} "
          "(Ctrl+C stops it).", flush=True)
    uvicorn.run(server_app(store, limits), host=host, port=port, log_level="warning")


def main(argv: Optional[list[str]] = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="circuitlab explore", description="Serve the patching explorer.")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0: every interface)")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT)
    args = parser.parse_args(argv)
    try:
        import gradio  # noqa: F401
    except ImportError:
        print("The explorer needs its extra: pip install 'circuitlab[explore]' (Gradio and Plotly).")
        return 2
    serve(args.host, args.port)
    return 0
