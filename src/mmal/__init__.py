"""mmal: multimodal active learning and data expansion."""

__version__ = "0.1.0"
