"""Real photos that ship inside scikit-image, scikit-learn and matplotlib, with hand-written captions and questions.

No caption data ships with these packages; every caption and answer here was written by looking at the image.
The photos are a small, real-world sanity check (a model trained only on synthetic shapes should visibly fail
on them), not a benchmark. The source packages are optional: photos whose package is missing are skipped with a
logged warning.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import datasets
import numpy as np
from PIL import Image

from .schema import caption_example, examples_to_dataset, exact_answer_references, png_image_value, vqa_example

logger = logging.getLogger(__name__)

Question = tuple[str, str, str]
"""(question, exact answer, question type)."""


@dataclass(frozen=True)
class Photo:
    """A bundled photo: where it comes from, how to load it, and what we wrote about it."""

    name: str
    package: str
    load: Callable[[], np.ndarray | Image.Image]
    captions: tuple[str, ...]
    questions: tuple[Question, ...]


def _skimage(function_name: str) -> Callable[[], np.ndarray]:
    """A loader for `skimage.data.<function_name>()`; for stereo pairs, the left view."""

    def load() -> np.ndarray:
        import skimage.data

        image = getattr(skimage.data, function_name)()
        return image[0] if isinstance(image, tuple) else image

    return load


def _sklearn(file_name: str) -> Callable[[], np.ndarray]:
    """A loader for one of scikit-learn's sample images."""

    def load() -> np.ndarray:
        from sklearn.datasets import load_sample_image

        return load_sample_image(file_name)

    return load


def _matplotlib(file_name: str) -> Callable[[], Image.Image]:
    """A loader for an image in matplotlib's sample data."""

    def load() -> Image.Image:
        from matplotlib.cbook import get_sample_data

        with Image.open(get_sample_data(file_name, asfileobj=False)) as image:
            return image.convert("RGB")

    return load


_PHOTOS = (
    Photo(
        "astronaut",
        "scikit-image",
        _skimage("astronaut"),
        (
            "a smiling astronaut in an orange spacesuit posing beside an american flag and a model of the space"
            " shuttle.",
            "an official portrait of astronaut Eileen Collins in an orange flight suit, with a black helmet in the"
            " corner.",
            "a woman with short brown hair in an orange spacesuit, a flag on the left and a shuttle model on the"
            " right.",
        ),
        (
            ("What color is the spacesuit?", "orange", "color"),
            ("Is the person smiling?", "yes", "yes_no"),
            ("What is on the left side of the picture?", "flag", "other"),
            ("What vehicle is the model on the right?", "space shuttle", "other"),
        ),
    ),
    Photo(
        "chelsea",
        "scikit-image",
        _skimage("chelsea"),
        (
            "a close-up of a tabby cat's face with green eyes and long white whiskers.",
            "a brown striped cat looking to the side with wide green eyes.",
            "the face of a tabby cat, photographed up close indoors.",
        ),
        (
            ("What animal is this?", "cat", "other"),
            ("What color are the cat's eyes?", "green", "color"),
            ("How many eyes can you see?", "2", "count"),
        ),
    ),
    Photo(
        "coffee",
        "scikit-image",
        _skimage("coffee"),
        (
            "a cup of espresso on a red saucer with a silver spoon, on a wooden table.",
            "an espresso in a red cup, white inside, standing on a matching saucer on a wooden table.",
            "a small cup of coffee with crema, seen from above, with a metal spoon resting on the saucer.",
        ),
        (
            ("What drink is in the cup?", "coffee", "other"),
            ("What color is the saucer?", "red", "color"),
            ("What is on the saucer next to the cup?", "spoon", "other"),
            ("What is the table made of?", "wood", "other"),
        ),
    ),
    Photo(
        "rocket",
        "scikit-image",
        _skimage("rocket"),
        (
            "a white rocket standing on its launch pad at dusk between tall lattice towers.",
            "a rocket on the launch pad under a deep blue evening sky, with bright lights around its base.",
            "a white rocket ready for launch at twilight, flanked by four metal towers.",
        ),
        (
            ("What color is the rocket?", "white", "color"),
            ("How many towers stand around the rocket?", "4", "count"),
            ("What color is the sky?", "blue", "color"),
            ("Are the lights on?", "yes", "yes_no"),
        ),
    ),
    Photo(
        "camera",
        "scikit-image",
        _skimage("camera"),
        (
            "a black and white photo of a man in a dark coat looking through a camera on a tripod.",
            "a cameraman standing on a grassy field, filming with a tripod-mounted camera, buildings far behind.",
            "a grayscale picture of a photographer outdoors using a camera on a tripod.",
        ),
        (
            ("Is this photo in color?", "no", "yes_no"),
            ("What is the camera mounted on?", "tripod", "other"),
            ("How many people are there?", "1", "count"),
        ),
    ),
    Photo(
        "horse",
        "scikit-image",
        _skimage("horse"),
        (
            "a black silhouette of a horse standing in profile on a white background.",
            "the silhouette of a standing horse facing right, in black on white.",
        ),
        (
            ("What animal is shown?", "horse", "other"),
            ("Which way is the horse facing?", "right", "other"),
            ("What color is the horse?", "black", "color"),
            ("What color is the background?", "white", "color"),
        ),
    ),
    Photo(
        "coins",
        "scikit-image",
        _skimage("coins"),
        (
            "a black and white photo of old coins laid out in four rows on a dark background.",
            "twenty-four ancient greek coins arranged in four rows of six.",
            "rows of ancient coins showing heads and figures, photographed in grayscale.",
        ),
        (
            ("How many coins are there?", "24", "count"),
            ("How many rows of coins are there?", "4", "count"),
            ("Is this photo in color?", "no", "yes_no"),
        ),
    ),
    Photo(
        "moon",
        "scikit-image",
        _skimage("moon"),
        (
            "a grayscale close-up of the surface of the moon with small craters.",
            "the gray, low-contrast lunar surface with scattered craters and dark patches.",
        ),
        (
            ("Is this photo in color?", "no", "yes_no"),
            ("Which celestial body's surface is this?", "moon", "other"),
        ),
    ),
    Photo(
        "hubble_deep_field",
        "scikit-image",
        _skimage("hubble_deep_field"),
        (
            "a deep space image full of distant galaxies in many colors on a black background.",
            "the hubble deep field: hundreds of small galaxies and a few stars against the darkness of space.",
        ),
        (
            ("What color is the background?", "black", "color"),
            ("What are the many small bright objects?", "galaxies", "other"),
            ("Is this a picture of space?", "yes", "yes_no"),
        ),
    ),
    Photo(
        "retina",
        "scikit-image",
        _skimage("retina"),
        (
            "a photograph of the back of a human eye: an orange-red retina with branching blood vessels.",
            "a round fundus image of a retina, the bright optic disc on the left and vessels spreading from it.",
            "a red-orange retina with dark red blood vessels on a black background.",
        ),
        (
            ("What body part is this?", "eye", "other"),
            ("What color is the background?", "black", "color"),
            ("On which side is the bright spot?", "left", "position"),
        ),
    ),
    Photo(
        "clock",
        "scikit-image",
        _skimage("clock"),
        (
            "a motion-blurred grayscale photo of a round wall clock on a plain gray wall.",
            "a blurry image of a clock, smeared sideways because the camera moved.",
        ),
        (
            ("Is the image blurry?", "yes", "yes_no"),
            ("Is this photo in color?", "no", "yes_no"),
            ("What object is this?", "clock", "other"),
        ),
    ),
    Photo(
        "page",
        "scikit-image",
        _skimage("page"),
        (
            "a page of a book with the heading \"region-based segmentation\" and a line of python code.",
            "a grayscale photo of printed text from a textbook about image segmentation.",
        ),
        (
            ("What is the heading of the page?", "region-based segmentation", "other"),
            ("Is there computer code on the page?", "yes", "yes_no"),
            ("Is this photo in color?", "no", "yes_no"),
        ),
    ),
    Photo(
        "text",
        "scikit-image",
        _skimage("text"),
        (
            "handwritten math formulas on a sheet of paper, photographed at a slant.",
            "a grayscale close-up of equations written by hand in dark ink.",
        ),
        (
            ("Is the writing handwritten or printed?", "handwritten", "other"),
            ("What color is the ink?", "black", "color"),
        ),
    ),
    Photo(
        "colorwheel",
        "scikit-image",
        _skimage("colorwheel"),
        (
            "a color wheel: a disc of rainbow hues that fade to white in the center, on a black background.",
            "a circular hue wheel with red at the top, green on the right and blue at the lower left.",
        ),
        (
            ("What color is at the top of the wheel?", "red", "color"),
            ("What color is the center?", "white", "color"),
            ("What color is the background?", "black", "color"),
            ("What shape is the wheel?", "circle", "shape"),
        ),
    ),
    Photo(
        "motorcycle",
        "scikit-image",
        _skimage("stereo_motorcycle"),
        (
            "a red yamaha motorcycle with a black seat parked in a garage.",
            "a red motorcycle on its kickstand on a concrete floor, with shelves of boxes behind it.",
            "side view of a red and chrome motorcycle parked indoors, facing right.",
        ),
        (
            ("What color is the motorcycle?", "red", "color"),
            ("What color is the seat?", "black", "color"),
            ("What brand is the motorcycle?", "yamaha", "other"),
            ("How many wheels does it have?", "2", "count"),
        ),
    ),
    Photo(
        "china",
        "scikit-learn",
        _sklearn("china.jpg"),
        (
            "a chinese pagoda with red pillars and orange-and-green tiled roofs above a lake and trees.",
            "the tower of buddhist incense at the summer palace in beijing, overlooking a lake on a hazy day.",
            "a tall traditional chinese tower among green trees, with a wide lake in the background.",
        ),
        (
            ("What is in the background?", "lake", "other"),
            ("What color are the pillars?", "red", "color"),
            ("Is there water in the picture?", "yes", "yes_no"),
        ),
    ),
    Photo(
        "flower",
        "scikit-learn",
        _sklearn("flower.jpg"),
        (
            "a close-up of an orange dahlia with rounded petals against a dark green background.",
            "a peach-colored pompon dahlia in focus, with a blurred garden behind it.",
        ),
        (
            ("What color is the flower?", "orange", "color"),
            ("What kind of flower is this?", "dahlia", "other"),
            ("Is the background blurry?", "yes", "yes_no"),
        ),
    ),
    Photo(
        "grace_hopper",
        "matplotlib",
        _matplotlib("grace_hopper.jpg"),
        (
            "an official portrait of grace hopper, an elderly woman in a navy uniform and cap, before an american"
            " flag.",
            "an old woman with glasses wearing a dark uniform with ribbons and a white-topped cap.",
        ),
        (
            ("Is the person wearing glasses?", "yes", "yes_no"),
            ("Is the person wearing a hat?", "yes", "yes_no"),
            ("What is behind her on the left?", "flag", "other"),
            ("What color is the background on the right?", "blue", "color"),
        ),
    ),
)
_PHOTOS_BY_NAME = {photo.name: photo for photo in _PHOTOS}


def photo_names() -> list[str]:
    """Names of all bundled photos, in catalogue order (some may be unavailable; see `load_photo`)."""
    return list(_PHOTOS_BY_NAME)


def _photo(name: str) -> Photo:
    """The catalogue entry of `name`, or a ValueError listing the known names."""
    if name not in _PHOTOS_BY_NAME:
        raise ValueError(f"Unknown photo {name!r}; choose one of {photo_names()}.")
    return _PHOTOS_BY_NAME[name]


def load_photo(name: str) -> Image.Image:
    """Load a bundled photo as an RGB PIL image (grayscale and binary images are converted).

    Raises ImportError naming the package to install when its source package is missing, and OSError when the
    package is installed but lacks the image.
    """
    photo = _photo(name)
    try:
        pixels = photo.load()
    except ImportError as error:
        raise ImportError(f"Photo {name!r} ships with {photo.package}; `pip install {photo.package}`.") from error
    if isinstance(pixels, Image.Image):
        return pixels.convert("RGB")
    if pixels.dtype == bool:
        pixels = pixels.astype(np.uint8) * 255
    return Image.fromarray(pixels).convert("RGB")


def build_photo_dataset() -> datasets.Dataset:
    """All available bundled photos in the example schema: per photo its caption row, then its VQA rows.

    Captions: the first written caption is the target and all are references. VQA references repeat the exact
    answer (see `exact_answer_references`). Photos whose source package or file is missing are skipped with a
    logged warning.
    """
    rows = []
    for photo in _PHOTOS:
        try:
            image = png_image_value(load_photo(photo.name))
        except (ImportError, OSError) as error:
            logger.warning("Skipping bundled photo %r: %s", photo.name, error)
            continue
        image_id = f"photo-{photo.name}"
        rows.append(caption_example(image, photo.captions, f"{image_id}-caption", image_id))
        for number, (question, answer, question_type) in enumerate(photo.questions):
            references = exact_answer_references(answer)
            rows.append(vqa_example(image, question, references, question_type, f"{image_id}-q{number}", image_id))
    return examples_to_dataset(rows)
