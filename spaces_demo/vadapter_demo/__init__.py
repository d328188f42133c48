"""The modules of the Gradio demo (spaces_demo/app.py is the Space's entry point), one job each:

- `settings`: limits, messages and paths the other modules share;
- `checkpoint`: which checkpoint to load, and loading it through the Auto classes and its remote code;
- `metrics_table`: the checkpoint's metrics file as a Markdown table;
- `inputs`: the checks on what a user sends (uploads, images, questions, generation settings);
- `streaming`: `generate` in a thread, streamed to the request and stopped when the request goes away;
- `demo_model`: the loaded checkpoint and the two handlers the buttons call;
- `examples`: the example images that ship in spaces_demo/examples;
- `layout`: the page and the server settings.

Nothing here imports hf_vadapter: the checkpoint brings its own code (`trust_remote_code=True`), so a Space needs only
these files and spaces_demo/requirements.txt.
"""

import os

os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"  # before any module here imports gradio: no telemetry requests
