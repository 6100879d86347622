"""`maskrcnn serve`: an HTTP API over a trained model, with dynamic batching, limits and metrics.

`maskrcnn.serve.app.create_app(model, settings)` builds the app (it needs the serve extra:
fastapi, uvicorn, python-multipart, prometheus-client); `serve.command.serve_command` is what the
command line runs. This package module itself imports nothing heavy: `maskrcnn.serve.settings`
is read by the command line before the web framework is loaded.
"""
