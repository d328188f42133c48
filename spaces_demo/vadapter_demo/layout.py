"""The page (`build_demo`) and the server settings it runs with (`launch_demo`)."""

from __future__ import annotations

from typing import Optional

import gradio as gr

from .demo_model import DemoModel
from .examples import example_inputs
from .inputs import ClientFile
from .settings import (
    CONCURRENCY_LIMIT,
    DECODING_MODES,
    DEFAULT_MAX_NEW_TOKENS,
    MAX_BEAMS,
    MAX_CONTEXT_CHARS,
    MAX_FILE_SIZE,
    MAX_NEW_TOKENS,
    MAX_QUESTION_CHARS,
    MAX_QUEUE_SIZE,
)

SYSTEM_FONTS = ("ui-sans-serif", "system-ui", "-apple-system", "Segoe UI", "Roboto", "Helvetica", "Arial", "sans-serif")
MONO_FONTS = ("ui-monospace", "SFMono-Regular", "Menlo", "Consolas", "Liberation Mono", "monospace")
CSS = ".answer textarea { font-size: 1.05rem; }"


def theme() -> gr.themes.Base:
    """The default theme with system fonts only: no Google Fonts (or any web font) request."""
    return gr.themes.Default(font=list(SYSTEM_FONTS), font_mono=list(MONO_FONTS))


def _image_input(elem_id: str) -> gr.Image:
    # image_mode=None keeps the upload as it is: read_image converts every mode itself, with the note it shows.
    return gr.Image(label="Image", type="filepath", image_mode=None, sources=["upload", "clipboard"], height=320,
                    elem_id=elem_id)


def build_demo(
    demo_model: Optional[DemoModel] = None,
    checkpoint: Optional[str] = None,
    concurrency_limit: int = CONCURRENCY_LIMIT,
    max_queue_size: int = MAX_QUEUE_SIZE,
    examples: bool = True,
) -> gr.Blocks:
    """The Blocks app, queued. Pass a loaded `DemoModel`, or a checkpoint to load (default: `resolve_checkpoint`)."""
    if demo_model is None:
        demo_model = DemoModel.load(checkpoint)
    rows = example_inputs() if examples else {"caption": [], "qa": []}
    with gr.Blocks(title="hf_vadapter demo", analytics_enabled=False, delete_cache=(3600, 3600)) as demo:
        gr.Markdown(
            "# hf_vadapter: a vision-language adapter\n"
            "A frozen vision tower and a frozen causal LM, joined by a small trained adapter. Upload an image (or "
            "click an example), then ask for a caption or a question's answer; the text streams in as it is "
            "generated.",
            latex_delimiters=[],
        )
        if not demo_model.ready:
            gr.Markdown(demo_model.howto_markdown(), elem_id="howto", latex_delimiters=[])
        with gr.Row():
            with gr.Column(scale=3):
                with gr.Tabs():
                    with gr.Tab("Caption", id="caption"):
                        with gr.Row():
                            caption_image = _image_input(elem_id="caption-image")
                            with gr.Column():
                                caption_button = gr.Button("Describe the image", variant="primary",
                                                           elem_id="caption-button")
                                caption_text = gr.Textbox(label="Caption", lines=4, interactive=False,
                                                          buttons=["copy"], elem_id="caption-answer",
                                                          elem_classes=["answer"])
                                caption_status = gr.Markdown(label="Status", elem_id="caption-status",
                                                             latex_delimiters=[])
                        if rows["caption"]:
                            gr.Examples(rows["caption"], inputs=[caption_image], examples_per_page=12,
                                        label="Examples: real photos and synthetic scenes", elem_id="caption-examples")
                    with gr.Tab("Visual QA", id="qa"):
                        with gr.Row():
                            qa_image = _image_input(elem_id="qa-image")
                            with gr.Column():
                                question = gr.Textbox(label="Question", lines=2, max_length=MAX_QUESTION_CHARS,
                                                      placeholder="What color is the circle?", elem_id="question")
                                qa_button = gr.Button("Answer", variant="primary", elem_id="qa-button")
                                qa_text = gr.Textbox(label="Answer", lines=3, interactive=False, buttons=["copy"],
                                                     elem_id="qa-answer", elem_classes=["answer"])
                                qa_status = gr.Markdown(label="Status", elem_id="qa-status", latex_delimiters=[])
                        if rows["qa"]:
                            gr.Examples(rows["qa"], inputs=[qa_image, question], examples_per_page=12,
                                        label="Examples: real photos and synthetic scenes", elem_id="qa-examples")
            with gr.Column(scale=2):
                with gr.Accordion("Generation settings", open=True):
                    max_new_tokens = gr.Slider(1, MAX_NEW_TOKENS, value=DEFAULT_MAX_NEW_TOKENS, step=1,
                                               label="Max new tokens")
                    decoding = gr.Radio(list(DECODING_MODES), value="greedy", label="Decoding")
                    num_beams = gr.Slider(2, MAX_BEAMS, value=3, step=1, label="Beams (beam search)")
                    temperature = gr.Slider(0.05, 2.0, value=0.7, step=0.05, label="Temperature (sampling)")
                    expert_context = gr.Textbox(
                        label="Expert context (LLaMA-Adapter V2)", value="", lines=2, max_length=MAX_CONTEXT_CHARS,
                        visible=demo_model.uses_expert_context, elem_id="expert-context",
                        info="Text from another model (a caption, OCR, a list of objects) added to the prompt as "
                             "'Context: ...'.",
                    )
                with gr.Accordion("Model", open=True):
                    gr.Markdown(demo_model.info_markdown(), elem_id="model-info", latex_delimiters=[])
        settings = [max_new_tokens, decoding, num_beams, temperature, expert_context]
        # preprocess=False: handlers get the upload's file payload and open it themselves (read_image), so a
        # decompression bomb or an unreadable file becomes a message instead of a Gradio error.
        common = dict(concurrency_id="generate", concurrency_limit=concurrency_limit, preprocess=False)
        # The events wrap the image payload in ClientFile: only Gradio's own uploads are opened.

        def caption(image, max_new_tokens, decoding, num_beams, temperature, expert_context):
            yield from demo_model.caption(ClientFile(image), max_new_tokens, decoding, num_beams, temperature,
                                          expert_context)

        def answer(image, question, max_new_tokens, decoding, num_beams, temperature, expert_context):
            yield from demo_model.answer(ClientFile(image), question, max_new_tokens, decoding, num_beams,
                                         temperature, expert_context)

        caption_button.click(caption, [caption_image, *settings], [caption_text, caption_status],
                             api_name="caption", **common)
        gr.on([qa_button.click, question.submit], answer, [qa_image, question, *settings],
              [qa_text, qa_status], api_name="answer", **common)
    demo.demo_model = demo_model  # for tests and callers that built the demo from a checkpoint
    return demo.queue(default_concurrency_limit=concurrency_limit, max_size=max_queue_size)


def launch_demo(demo: gr.Blocks, host: Optional[str] = None, port: Optional[int] = None,
                max_file_size: str | int = MAX_FILE_SIZE, **kwargs):
    """Start the server with the demo's settings: no share tunnel, system fonts, capped uploads, no extras.

    `host`/`port` default to GRADIO_SERVER_NAME/GRADIO_SERVER_PORT, else 127.0.0.1:7860 (Spaces sets both).
    Extra keyword arguments go to `Blocks.launch` (for example `prevent_thread_lock=True`).
    """
    options = dict(
        server_name=host,
        server_port=port,
        share=False,
        max_file_size=max_file_size,
        theme=theme(),
        css=CSS,
        footer_links=["api", "settings"],
        run_history=False,
        enable_monitoring=False,
        mcp_server=False,
        ssr_mode=False,
        pwa=False,
    )
    options.update(kwargs)
    return demo.launch(**options)
