"""Typed errors raised by hf_vadapter.

Each error subclasses the builtin a caller would naturally catch (``ValueError``, ``OSError``, ...), so existing
``except ValueError`` code keeps working, while ``except VisionAdapterError`` catches everything of ours.
"""


class VisionAdapterError(Exception):
    """Base class of every error hf_vadapter raises on purpose."""


class ImageTokenMismatchError(VisionAdapterError, ValueError):
    """The number of `<image>` placeholders does not match the visual tokens or the images given."""


class InvalidImageError(VisionAdapterError, ValueError):
    """An image or a `pixel_values` tensor cannot be used (empty, too large, wrong shape or dtype, NaN)."""


class InvalidPromptError(VisionAdapterError, ValueError):
    """A prompt cannot be used (empty, or its placeholders do not fit the LM context)."""


class AdapterConfigError(VisionAdapterError, ValueError):
    """An adapter config is unknown, malformed, from a newer hf_vadapter, or does not fit the backbones."""


class UnsupportedArchitectureError(VisionAdapterError, ValueError):
    """An adapter needs to reach inside an LM family that the LM anatomy does not know."""


class BackboneMismatchError(VisionAdapterError, ValueError):
    """A checkpoint was trained for other backbones than the ones it is being attached to."""


class CheckpointError(VisionAdapterError, OSError):
    """A checkpoint folder or file is missing, truncated, corrupt, or holds keys that do not match the model."""


class InvalidInputError(VisionAdapterError, ValueError):
    """A model input tensor (`labels`, `attention_mask`) has the wrong shape or values."""


class NonFiniteError(VisionAdapterError, FloatingPointError):
    """A training loss or adapter weights hold NaN or infinite values."""


class InvalidDatasetError(VisionAdapterError, ValueError):
    """A training data set is empty, or one of its rows cannot be used (an image that cannot be read)."""
