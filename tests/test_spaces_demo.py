"""The Gradio Space demo (spaces_demo/app.py) on tiny random checkpoints: through gradio_client on loopback, in a
real headless Chromium driven by playwright, with bad inputs, under load, and without any checkpoint.

Answers are checked against the model's own greedy output for the same input (a direct `model.generate`), so a
correct pipeline is the only way to pass. The browser test saves a screenshot to pytest's tmp folder, to
$HF_VADAPTER_TEST_ARTIFACTS when set, and to /tmp/hf_vadapter_demo_screenshot.png.
"""

import importlib.util
import json
import os
import shutil
import socket
import struct
import subprocess
import sys
import threading
import time
import urllib.request
import zlib
from pathlib import Path
from urllib.parse import urlparse

os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"

import pytest
import torch
from PIL import Image
from transformers import TextIteratorStreamer

import hf_vadapter
from conftest import build_model, random_image, run_without_hf_vadapter

APP_PATH = Path(__file__).resolve().parent.parent / "spaces_demo" / "app.py"
sys.path.insert(0, str(APP_PATH.parent))  # as when the Space runs app.py: its folder is importable
from vadapter_demo import checkpoint as demo_checkpoint  # noqa: E402
from vadapter_demo import examples as demo_examples  # noqa: E402
from vadapter_demo import inputs as demo_inputs  # noqa: E402
from vadapter_demo import settings as demo_settings  # noqa: E402

SCREENSHOT_COPY = Path("/tmp/hf_vadapter_demo_screenshot.png")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync"]
MAX_NEW_TOKENS = 12
LOOPBACK = {"127.0.0.1", "::1", "localhost"}
STREAM_QUESTIONS = ("How many shapes are there?", "Is there a blue star?", "What shape is the green object?")


def load_app():
    """spaces_demo/app.py as a module (the Space runs the file directly; its parts are the vadapter_demo package)."""
    spec = importlib.util.spec_from_file_location("hf_vadapter_spaces_demo_app", APP_PATH)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def direct_answer(model, processor, image, prompt: str, max_new_tokens: int = MAX_NEW_TOKENS) -> str:
    """The model's own greedy answer, with no demo code in the way."""
    inputs = processor(images=[image], text=[prompt])
    with torch.no_grad():
        output = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False)
    return processor.decode(output[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True).strip()


def direct_stream(model, processor, image, prompt: str, max_new_tokens: int = 24) -> list:
    """The texts a TextIteratorStreamer releases during the model's greedy generation, accumulated and stripped."""
    inputs = processor(images=[image], text=[prompt])
    streamer = TextIteratorStreamer(processor.tokenizer, skip_prompt=True, skip_special_tokens=True)
    worker = threading.Thread(
        target=model.generate, kwargs=dict(**inputs, max_new_tokens=max_new_tokens, do_sample=False, streamer=streamer)
    )
    worker.start()
    texts, text = [], ""
    for piece in streamer:
        text += piece
        if piece:
            texts.append(text.strip())
    worker.join()
    return texts


def png_header_only(path: Path, width: int, height: int) -> Path:
    """A PNG that declares `width` x `height` but holds one byte of pixels: a decompression bomb's header."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)  # 1-bit grayscale
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0"))
                     + chunk(b"IEND", b""))
    return path


def final(outputs):
    """The last (answer, status) pair a handler yields."""
    return list(outputs)[-1]


@pytest.fixture(scope="module", autouse=True)
def no_outside_connections():
    """Every connection and name lookup made in this process while these tests run must stay on loopback."""
    attempts = []
    real_connect, real_connect_ex = socket.socket.connect, socket.socket.connect_ex
    real_getaddrinfo = socket.getaddrinfo

    def outside(host) -> bool:
        return isinstance(host, (str, bytes)) and (host.decode() if isinstance(host, bytes) else host) not in LOOPBACK

    def connect(self, address):
        if isinstance(address, tuple) and outside(address[0]):
            attempts.append(address)
            raise ConnectionRefusedError(f"test: no outside connections ({address})")
        return real_connect(self, address)

    def connect_ex(self, address):
        if isinstance(address, tuple) and outside(address[0]):
            attempts.append(address)
            return 111
        return real_connect_ex(self, address)

    def getaddrinfo(host, *args, **kwargs):
        if outside(host):
            attempts.append(host)
            raise socket.gaierror(f"test: no outside name lookups ({host})")
        return real_getaddrinfo(host, *args, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(socket.socket, "connect", connect)
        patch.setattr(socket.socket, "connect_ex", connect_ex)
        patch.setattr(socket, "getaddrinfo", getaddrinfo)
        yield attempts
    assert not attempts, f"the demo or its client tried to reach outside: {attempts}"


@pytest.fixture(scope="module")
def app():
    return load_app()


@pytest.fixture(scope="module")
def checkpoint(tiny_bases, tmp_path_factory):
    """An adapter-only MLP-projector checkpoint with a metrics file beside it, and the model that wrote it."""
    tower_path, lm_path = tiny_bases("vit", "llama")
    model, processor = build_model(tower_path, lm_path, hf_vadapter.MLPProjectorConfig(), seed=0)
    model.eval()
    run = tmp_path_factory.mktemp("demo_run")
    model.save_adapter(run / "adapter", processor=processor)
    metrics = {"metrics": {"test": {"vqa_accuracy": 0.5, "cider": 0.125}, "test_heldout": {"vqa_accuracy": 0.25}}}
    (run / "metrics.json").write_text(json.dumps(metrics))
    return run / "adapter", model, processor


@pytest.fixture(scope="module")
def server(app, checkpoint):
    """The demo on 127.0.0.1 in a background thread: (url, its DemoModel)."""
    folder, _, _ = checkpoint
    demo_model = app.DemoModel.load(str(folder))
    assert demo_model.ready, demo_model.error
    demo = app.build_demo(demo_model)
    _, url, share_url = app.launch_demo(demo, host="127.0.0.1", port=free_port(), prevent_thread_lock=True,
                                        quiet=True)
    assert share_url is None
    yield url, demo_model
    demo.close()


@pytest.fixture(scope="module")
def client(server):
    from gradio_client import Client

    return Client(server[0], verbose=False)


@pytest.fixture(scope="module")
def scene_png(tmp_path_factory):
    """A synthetic scene (from hf_vadapter.data.synthetic) as a PNG file."""
    from hf_vadapter.data.synthetic import render_scene, sample_scene, scene_rng

    path = tmp_path_factory.mktemp("scene") / "scene.png"
    render_scene(sample_scene(scene_rng("test", 0, 0)), 224).save(path)
    return path


def settings(max_new_tokens=MAX_NEW_TOKENS, decoding="greedy", num_beams=3, temperature=0.7, context=""):
    return [max_new_tokens, decoding, num_beams, temperature, context]


# ------------------------------------------------------------------------------------------------ 1. gradio_client


def test_client_caption_and_qa_equal_direct_generate(client, checkpoint, scene_png, tmp_path):
    from gradio_client import handle_file

    _, model, processor = checkpoint
    photo = tmp_path / "photo.png"
    random_image(3, size=(64, 48)).save(photo)
    for path in (scene_png, photo):
        image = Image.open(path).convert("RGB")
        caption, status = client.predict(handle_file(str(path)), *settings(), api_name="/caption")
        assert caption == direct_answer(model, processor, image, "Describe the image.")
        assert "new tokens" in status and "greedy" in status
        answer, status = client.predict(handle_file(str(path)), "What color is the circle?", *settings(),
                                        api_name="/answer")
        assert answer == direct_answer(model, processor, image, "What color is the circle?")

    # Streamed: the job yields what TextIteratorStreamer releases (text up to each space), then the final answer.
    image = Image.open(scene_png).convert("RGB")
    question = max(STREAM_QUESTIONS, key=lambda q: len(direct_stream(model, processor, image, q)))
    partials = direct_stream(model, processor, image, question)
    assert len(partials) >= 2, "no candidate question streams in pieces; pick others"
    job = client.submit(handle_file(str(scene_png)), question, *settings(max_new_tokens=24), api_name="/answer")
    answer, status = job.result(timeout=60)
    outputs = [tuple(output) for output in job.outputs()]
    assert answer == direct_answer(model, processor, image, question, 24) and "new tokens" in status
    assert outputs[-1] == (answer, status)
    streamed = [text for text, state in outputs[:-1] if state == "Generating…"]
    assert len(streamed) >= 2 and streamed == [text for text in partials if text in streamed], (streamed, partials)


def test_client_beam_search_and_sampling(client, checkpoint, scene_png):
    from gradio_client import handle_file

    _, model, processor = checkpoint
    image = Image.open(scene_png).convert("RGB")
    answer, status = client.predict(handle_file(str(scene_png)), *settings(decoding="beam search", num_beams=3),
                                    api_name="/caption")
    inputs = processor(images=[image], text=["Describe the image."])
    with torch.no_grad():
        output = model.generate(**inputs, max_new_tokens=MAX_NEW_TOKENS, do_sample=False, num_beams=3)
    assert answer == processor.decode(output[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True).strip()
    assert "beam search" in status
    answer, status = client.predict(handle_file(str(scene_png)), *settings(decoding="sampling", temperature=1.3),
                                    api_name="/caption")
    assert "sampling" in status and not answer.startswith("⚠️")


# ------------------------------------------------------------------------------------------------ 2. browser


def test_browser_upload_ask_and_screenshot(app, server, checkpoint, scene_png, tmp_path):
    """Headless Chromium (Debian's package) via playwright: upload, type, click, read the answer, screenshot."""
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install playwright)")
    chromium = shutil.which("chromium") or ("/usr/bin/chromium" if os.path.exists("/usr/bin/chromium") else None)
    if chromium is None:
        pytest.skip("Debian's chromium is not installed (apt-get install chromium; scripts/test.sh does it as root)")
    url, _ = server
    _, model, processor = checkpoint
    question = "What color is the star?"  # the scene holds a triangle, a star and a square
    image = Image.open(scene_png).convert("RGB")
    expected = direct_answer(model, processor, image, question, demo_settings.DEFAULT_MAX_NEW_TOKENS)  # the page's defaults

    requests = []
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.on("request", lambda request: requests.append(request.url))
            page.goto(url, wait_until="networkidle")
            # Captioning an example (a bundled photo): the example file goes through the same handler.
            page.locator("#caption-examples button.gallery-item").first.click()
            page.locator("#caption-image img").first.wait_for(state="visible", timeout=30_000)
            page.locator("#caption-button").click()
            page.wait_for_function(
                "() => (document.querySelector('#caption-status')?.innerText || '').includes('new tokens')",
                timeout=60_000,
            )
            example_caption = page.locator("#caption-answer textarea").input_value()
            # Visual QA on an uploaded file, typed question, button click.
            page.get_by_role("tab", name="Visual QA").click()
            page.locator("#qa-image input[type=file]").set_input_files(str(scene_png))
            page.locator("#qa-image img").first.wait_for(state="visible", timeout=30_000)
            page.locator("#question textarea").fill(question)
            page.locator("#qa-button").click()
            page.wait_for_function(
                "() => (document.querySelector('#qa-status')?.innerText || '').includes('new tokens')",
                timeout=60_000,
            )
            answer = page.locator("#qa-answer textarea").input_value()
            status = page.locator("#qa-status").inner_text()
            font = page.evaluate("() => getComputedStyle(document.querySelector('.gradio-container')).fontFamily")
            screenshot = tmp_path / "hf_vadapter_demo.png"
            page.screenshot(path=str(screenshot), full_page=True)
        finally:
            browser.close()

    shutil.copy(screenshot, SCREENSHOT_COPY)
    if os.environ.get("HF_VADAPTER_TEST_ARTIFACTS"):
        artifacts = Path(os.environ["HF_VADAPTER_TEST_ARTIFACTS"])
        artifacts.mkdir(parents=True, exist_ok=True)
        shutil.copy(screenshot, artifacts / screenshot.name)
    # A textarea's value normalises line breaks; nothing else may differ.
    assert answer == expected.replace("\r\n", "\n").replace("\r", "\n")
    example = Image.open(demo_examples.example_inputs()["caption"][0][0]).convert("RGB")
    expected_caption = direct_answer(model, processor, example, "Describe the image.", demo_settings.DEFAULT_MAX_NEW_TOKENS)
    assert example_caption == expected_caption.replace("\r\n", "\n").replace("\r", "\n")
    assert "greedy" in status
    assert "ui-sans-serif" in font and "Source Sans" not in font, font
    hosts = {urlparse(request).hostname for request in requests if urlparse(request).scheme in ("http", "https")}
    assert hosts == {"127.0.0.1"}, f"requests left loopback: {sorted(hosts)}"
    assert screenshot.stat().st_size > 10_000


# ------------------------------------------------------------------------------------------------ 3. bad inputs


def test_handlers_turn_bad_inputs_into_messages(app, server, checkpoint, tmp_path):
    _, demo_model = server
    _, model, processor = checkpoint
    picture = random_image(5, size=(40, 30))

    gray = picture.convert("L")
    answer, status = final(demo_model.answer(gray, "What color is the circle?", *settings()))
    assert answer == direct_answer(model, processor, gray.convert("RGB"), "What color is the circle?")
    assert "grayscale" in status

    rgba = picture.convert("RGBA")
    rgba.putalpha(128)
    answer, status = final(demo_model.caption(rgba, *settings()))
    white = Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba).convert("RGB")
    assert answer == direct_answer(model, processor, white, "Describe the image.")
    assert "transparent" in status

    empty_file = tmp_path / "empty.png"
    empty_file.write_bytes(b"")
    garbage = tmp_path / "garbage.png"
    garbage.write_bytes(b"not an image at all" * 10)
    cases = {
        "no image": (demo_model.answer(None, "What is it?", *settings()), "upload an image"),
        "empty image": (demo_model.caption(Image.new("RGB", (0, 0)), *settings()), "empty"),
        "empty file": (demo_model.caption(str(empty_file), *settings()), "empty"),
        "unreadable file": (demo_model.caption(str(garbage), *settings()), "could not be read"),
        "huge image": (demo_model.caption(Image.new("1", (8100, 8000)), *settings()), "pixel limit"),
        "huge file": (demo_model.caption(str(png_header_only(tmp_path / "huge.png", 9000, 9000)), *settings()),
                      "pixel limit"),
        "bomb file": (demo_model.caption(str(png_header_only(tmp_path / "bomb.png", 30000, 30000)), *settings()),
                      "pixel limit"),
        "empty question": (demo_model.answer(picture, "   ", *settings()), "type a question"),
        "long question": (demo_model.answer(picture, "why " * 200, *settings()), "characters long"),
        "bad decoding": (demo_model.caption(picture, *settings(decoding="telepathy")), "Unknown decoding"),
    }
    for name, (outputs, phrase) in cases.items():
        answer, status = final(outputs)
        assert answer.startswith(demo_settings.WARNING) and phrase in answer, (name, answer)
        assert "Traceback" not in answer + status, name


def test_client_bad_uploads_get_messages(app, client, tmp_path):
    """The same refusals through the server: the files are opened by the handler, not by Gradio."""
    from gradio_client import handle_file

    empty_file = tmp_path / "empty.png"
    empty_file.write_bytes(b"")
    bomb = png_header_only(tmp_path / "bomb.png", 30000, 30000)
    gray = tmp_path / "gray.png"
    random_image(6).convert("L").save(gray)
    for path, phrase in ((empty_file, "empty"), (bomb, "pixel limit")):
        answer, _ = client.predict(handle_file(str(path)), *settings(), api_name="/caption")
        assert answer.startswith(demo_settings.WARNING) and phrase in answer, answer
    answer, _ = client.predict(handle_file(str(gray)), "", *settings(), api_name="/answer")
    assert answer.startswith(demo_settings.WARNING) and "type a question" in answer
    answer, status = client.predict(handle_file(str(gray)), "Where is it?", *settings(), api_name="/answer")
    assert not answer.startswith(demo_settings.WARNING) and "grayscale" in status
    answer, _ = client.predict(None, "Where is it?", *settings(), api_name="/answer")
    assert answer.startswith(demo_settings.WARNING) and "upload an image" in answer



def test_server_refuses_big_uploads_and_foreign_paths(server, tmp_path):
    """Uploads over MAX_FILE_SIZE get 413; a file path that was never uploaded never reaches the handler."""
    import httpx

    url, demo_model = server
    too_big = b"\0" * (11 * 1024 * 1024)  # over MAX_FILE_SIZE (10 MB)
    response = httpx.post(url + "gradio_api/upload", files={"files": ("big.png", too_big, "image/png")}, timeout=30)
    assert response.status_code == 413
    secret = tmp_path / "server_side.png"
    Image.new("RGB", (8, 8)).save(secret)
    requests_before = demo_model.stats["requests"]
    payload = {"data": [{"path": str(secret), "meta": {"_type": "gradio.FileData"}}, *settings()]}
    event = httpx.post(url + "gradio_api/call/caption", json=payload, timeout=30).json()["event_id"]
    stream = httpx.get(url + f"gradio_api/call/caption/{event}", timeout=30).text
    assert "event: error" in stream
    assert demo_model.stats["requests"] == requests_before


def _call_over_http(url: str, api: str, data: list) -> str:
    """One event through the HTTP API on 127.0.0.1, as any client could send it: the reply stream's text."""
    import httpx

    event = httpx.post(url + f"gradio_api/call/{api}", json={"data": data}, timeout=60).json()["event_id"]
    return httpx.get(url + f"gradio_api/call/{api}/{event}", timeout=120).text


def _upload_over_http(url: str, name: str, content: bytes) -> str:
    import httpx

    response = httpx.post(url + "gradio_api/upload", files={"files": (name, content, "image/png")}, timeout=30)
    response.raise_for_status()
    return response.json()[0]


def test_only_files_gradio_received_as_uploads_are_opened(app, server, scene_png, tmp_path):
    """Server paths named by a client get one and the same refusal, for both payload shapes, whether they exist or
    not; a real upload is captioned."""
    url, demo_model = server
    secret = tmp_path / "server_side.png"
    Image.new("RGB", (8, 8), "red").save(secret)
    missing = tmp_path / "missing.png"
    upload_root = demo_inputs.upload_folder()
    escape = upload_root / f"escape-{os.getpid()}.png"  # a symlink inside the upload folder pointing out of it
    escape.symlink_to(secret)
    targets = {
        "server image": str(secret),
        "missing file": str(missing),
        "relative ../ path": "../" * 12 + str(secret).lstrip("/"),
        "upload folder, ../ out": str(upload_root / "x" / ".." / ".." / secret.relative_to("/")),
        "symlink out of the upload folder": str(escape),
    }
    try:
        for shape in ("bare", "FileData"):
            replies = {}
            for name, target in targets.items():
                payload = {"path": target} if shape == "bare" else {"path": target, "meta": {"_type": "gradio.FileData"}}
                replies[name] = _call_over_http(url, "caption", [payload, *settings()])
            assert len(set(replies.values())) == 1, (shape, replies)  # nothing tells what exists on the server
            reply = next(iter(replies.values()))
            assert demo_settings.NOT_AN_UPLOAD in reply or "event: error" in reply, (shape, reply)
            assert demo_settings.NOT_AN_UPLOAD in replies["server image"] or shape == "FileData"
    finally:
        escape.unlink()

    uploaded = _upload_over_http(url, "scene.png", scene_png.read_bytes())
    reply = _call_over_http(url, "caption", [{"path": uploaded}, *settings()])
    assert "event: complete" in reply and demo_settings.NOT_AN_UPLOAD not in reply and "Nothing was generated" not in reply


def test_truncated_png_and_nan_temperature_get_their_own_messages(app, server, scene_png):
    url, _ = server
    data = scene_png.read_bytes()
    truncated = _upload_over_http(url, "cut.png", data[: len(data) // 2])
    reply = _call_over_http(url, "caption", [{"path": truncated}, *settings()])
    assert "truncated or damaged" in reply and "Something went wrong" not in reply, reply
    whole = _upload_over_http(url, "whole.png", data)
    reply = _call_over_http(url, "caption", [{"path": whole}, *settings(decoding="sampling", temperature="nan")])
    assert "temperature must be a number" in reply and "Something went wrong" not in reply, reply


# ------------------------------------------------------------------------------------------------ 4. load


def test_load_twenty_concurrent_requests_are_queued(app, server, client, checkpoint, scene_png):
    from gradio_client import handle_file

    _, demo_model = server
    _, model, processor = checkpoint
    image = Image.open(scene_png).convert("RGB")
    questions = [f"How many shapes are there? ({index})" for index in range(10)]
    expected_caption = direct_answer(model, processor, image, "Describe the image.", 8)
    expected = {question: direct_answer(model, processor, image, question, 8) for question in questions}
    for key in ("active", "peak_active", "generating", "peak_generating"):
        demo_model.stats[key] = 0

    start = time.perf_counter()
    jobs = []
    for index in range(20):
        if index % 2:
            jobs.append((expected_caption, client.submit(handle_file(str(scene_png)), *settings(max_new_tokens=8),
                                                         api_name="/caption")))
        else:
            question = questions[index // 2]
            jobs.append((expected[question], client.submit(handle_file(str(scene_png)), question,
                                                           *settings(max_new_tokens=8), api_name="/answer")))
    for want, job in jobs:
        answer, status = job.result(timeout=120)
        assert answer == want and "new tokens" in status
    elapsed = time.perf_counter() - start

    assert elapsed < 90, f"20 requests took {elapsed:.1f} s"
    assert 1 <= demo_model.stats["peak_active"] <= demo_settings.CONCURRENCY_LIMIT, demo_model.stats
    assert demo_model.stats["peak_generating"] == 1, demo_model.stats
    assert demo_model.stats["active"] == demo_model.stats["generating"] == 0


# ------------------------------------------------------------------------------------------------ 5. no checkpoint


def test_without_checkpoint_the_app_starts_and_explains(app, tmp_path, monkeypatch):
    from gradio_client import Client

    monkeypatch.delenv(demo_settings.CHECKPOINT_ENV, raising=False)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(demo_settings, "REPO_ROOT", tmp_path)  # no outputs/quickstart/adapter anywhere
    demo_model = app.DemoModel.load()
    assert not demo_model.ready and demo_model.checkpoint is None
    demo = app.build_demo(demo_model, examples=False)
    _, url, _ = app.launch_demo(demo, host="127.0.0.1", port=free_port(), prevent_thread_lock=True, quiet=True)
    try:
        config = urllib.request.urlopen(url + "config", timeout=30).read().decode()
        assert "bash scripts/quickstart.sh" in config and demo_settings.CHECKPOINT_ENV in config
        answer, status = Client(url, verbose=False).predict(None, *settings(), api_name="/caption")
        assert answer.startswith(demo_settings.WARNING) and "scripts/quickstart.sh" in answer and demo_settings.CHECKPOINT_ENV in answer
    finally:
        demo.close()


def test_launch_command_with_a_missing_checkpoint(tmp_path):
    """`python spaces_demo/app.py --port N` as documented, pointed at a folder that does not exist."""
    port = free_port()
    env = {**os.environ, "HF_VADAPTER_CHECKPOINT": str(tmp_path / "missing"), "GRADIO_ANALYTICS_ENABLED": "False"}
    log = tmp_path / "app.log"
    with open(log, "w") as handle:
        process = subprocess.Popen([sys.executable, str(APP_PATH), "--port", str(port)], cwd=tmp_path, env=env,
                                   stdout=handle, stderr=subprocess.STDOUT)
    try:
        deadline, config = time.monotonic() + 120, None
        while time.monotonic() < deadline and process.poll() is None:
            try:
                config = urllib.request.urlopen(f"http://127.0.0.1:{port}/config", timeout=5).read().decode()
                break
            except OSError:
                time.sleep(0.5)
        assert config is not None, f"no page in 120 s:\n{log.read_text()[-3000:]}"
        assert "does not exist" in config and "bash scripts/quickstart.sh" in config
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()


# ------------------------------------------------------------------------------------------------ info, experts


def test_info_panel_and_checkpoint_resolution(app, server, checkpoint, monkeypatch):
    folder, model, _ = checkpoint
    _, demo_model = server
    info = demo_model.info_markdown()
    trainable, total = model.get_nb_trainable_parameters()
    assert f"{trainable:,d} of {total:,d}" in info and "`mlp_projector`" in info
    assert model.config.vision_model_name_or_path in info and model.config.text_model_name_or_path in info
    assert "metrics.json" in info and "50.0%" in info and "25.0%" in info and "0.125" in info
    assert not demo_model.uses_expert_context

    monkeypatch.setenv(demo_settings.CHECKPOINT_ENV, str(folder))
    assert demo_checkpoint.resolve_checkpoint() == (str(folder), demo_settings.CHECKPOINT_ENV)
    assert demo_checkpoint.resolve_checkpoint("other") == ("other", "--checkpoint")
    monkeypatch.delenv(demo_settings.CHECKPOINT_ENV)
    monkeypatch.setattr(demo_settings, "REPO_ROOT", folder.parent)
    monkeypatch.chdir(folder.parent)
    assert demo_checkpoint.resolve_checkpoint() == (None, "default")


def test_llama_adapter_v2_expert_context(app, tiny_bases, tmp_path):
    tower_path, lm_path = tiny_bases("vit", "llama")
    model, processor = build_model(tower_path, lm_path, hf_vadapter.LlamaAdapterV2Config(), seed=1)
    model.eval()
    model.save_adapter(tmp_path / "v2", processor=processor)
    demo_model = app.DemoModel.load(str(tmp_path / "v2"))
    assert demo_model.uses_expert_context
    image = random_image(7)
    context = "a red circle on the left"
    answer, _ = final(demo_model.answer(image, "What color is the circle?", *settings(context=context)))
    prompt = f"Context: {context}\nWhat color is the circle?"
    assert answer == direct_answer(model, processor, image, prompt)
    components = app.build_demo(demo_model, examples=False).get_config_file()["components"]
    box = [c for c in components if c.get("props", {}).get("elem_id") == "expert-context"]
    assert len(box) == 1 and box[0]["props"]["visible"] is True


def test_describe_then_answer_checkpoint_describes_before_it_answers(app, tiny_bases, tmp_path):
    tower_path, lm_path = tiny_bases("vit", "llama")
    model, processor = build_model(tower_path, lm_path, hf_vadapter.MLPProjectorConfig(pool_size=2), seed=2)
    processor.describe_prompt = "Describe the image."
    model.eval().save_adapter(tmp_path / "describe", processor=processor)
    demo_model = app.DemoModel.load(str(tmp_path / "describe"))
    image = random_image(8)
    outputs = list(demo_model.answer(image, "What color is the circle?", *settings(context="on a table")))
    description = direct_answer(model, processor, image, "Describe the image.")
    expected = direct_answer(
        model, processor, image, processor.with_context("What color is the circle?", f"{description} on a table")
    )
    assert outputs[-1][0] == expected and f"Described as: {description!r}." in outputs[-1][1]
    assert any(status.startswith("Describing the image first") for _, status in outputs[:-1])
    caption, _ = final(demo_model.caption(image, *settings()))
    assert caption == description  # the caption button asks for the description itself, with no context


# ------------------------------------------------------------------------------------------------ a Space's own files


def test_demo_runs_without_hf_vadapter(checkpoint, tmp_path):
    """What a Space does: spaces_demo/ and its requirements only. The checkpoint loads through the Auto classes
    and its own remote code, answers as the model does, and nothing imports hf_vadapter."""
    folder, model, processor = checkpoint
    image_path = tmp_path / "photo.png"
    random_image(11, size=(48, 40)).save(image_path)
    expected = direct_answer(model, processor, Image.open(image_path).convert("RGB"), "What color is the circle?")
    result = run_without_hf_vadapter(
        f"""
        sys.path.insert(0, {str(APP_PATH.parent)!r})
        import importlib.util
        spec = importlib.util.spec_from_file_location("space_app", {str(APP_PATH)!r})
        app = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(app)
        demo_model = app.DemoModel.load({str(folder)!r})
        assert demo_model.ready, demo_model.error
        answer, status = list(demo_model.answer({str(image_path)!r}, "What color is the circle?", 12))[-1]
        from PIL import Image
        empty, _ = list(demo_model.caption(Image.new("RGB", (0, 0)), 12))[-1]
        components = app.build_demo(demo_model, examples=False).get_config_file()["components"]
        box = [c for c in components if c.get("props", {{}}).get("elem_id") == "expert-context"]
        print(json.dumps({{
            "answer": answer, "status": status, "empty": empty, "box_visible": box[0]["props"]["visible"],
            "model_module": type(demo_model.model).__module__,
            "processor_module": type(demo_model.processor).__module__,
            "hf_vadapter_modules": [name for name, module in sys.modules.items()
                                    if name.startswith("hf_vadapter") and module is not None],
        }}))
        """
    )
    assert result["hf_vadapter_modules"] == []
    assert result["model_module"].startswith("transformers_modules.")
    assert result["processor_module"].startswith("transformers_modules.")
    assert result["answer"] == expected and "new tokens" in result["status"]
    # The checkpoint's own typed error (InvalidImageError from its processing code) is shown as a message.
    assert result["empty"].startswith(demo_settings.WARNING) and "empty" in result["empty"]
    assert result["box_visible"] is False


def test_space_files_never_import_hf_vadapter():
    """The Space's code imports no hf_vadapter module, and its requirements install nothing from a placeholder."""
    import ast

    for path in sorted(APP_PATH.parent.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = [alias.name for alias in node.names] if isinstance(node, ast.Import) else (
                [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            assert not any(name.split(".")[0] == "hf_vadapter" for name in names), (path, ast.dump(node))
    requirements = (APP_PATH.parent / "requirements.txt").read_text(encoding="utf-8")
    lines = [line.split("#")[0].strip() for line in requirements.splitlines()]
    packages = {line.split("=")[0].split(">")[0].split("<")[0].strip().lower() for line in lines
                if line and not line.startswith("-")}
    assert packages == {"torch", "transformers", "safetensors", "pillow", "gradio"}, packages
    assert "OWNER" not in requirements and "git+" not in requirements


def test_expert_context_template_matches_the_library():
    from hf_vadapter.experts import DEFAULT_TEMPLATE, add_expert_context

    assert demo_inputs.EXPERT_CONTEXT_TEMPLATE == DEFAULT_TEMPLATE
    image = random_image(2)
    assert demo_inputs.with_expert_context("Q?", "ctx") == add_expert_context("Q?", image, lambda _: "ctx")
    assert demo_inputs.with_expert_context("Q?", "") == add_expert_context("Q?", image, lambda _: "")


def test_shipped_examples_are_listed_and_current():
    """Every example file exists and is listed; the scenes equal what hf_vadapter.data.synthetic renders today."""
    import numpy as np
    from hf_vadapter.data.synthetic import build_synthetic_dataset

    index = json.loads((demo_examples.EXAMPLES_DIR / demo_examples.EXAMPLES_INDEX).read_text())["examples"]
    files = {path.name for path in demo_examples.EXAMPLES_DIR.iterdir()} - {demo_examples.EXAMPLES_INDEX}
    assert files == {entry["file"] for entry in index}
    rows = demo_examples.example_inputs()
    assert len(rows["caption"]) == len(index) and len(rows["qa"]) == sum(bool(e["question"]) for e in index)
    scenes = [entry for entry in index if entry["file"].endswith(".png")]
    fresh = build_synthetic_dataset("test", len(scenes), image_size=224)
    fresh_images = {row["image_id"]: row["image"] for row in fresh}
    for entry in scenes:
        shipped = np.asarray(Image.open(demo_examples.EXAMPLES_DIR / entry["file"]).convert("RGB"))
        assert np.array_equal(shipped, np.asarray(fresh_images[entry["file"][:-4]].convert("RGB"))), entry["file"]
