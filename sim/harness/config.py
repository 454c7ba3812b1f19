"""How a design's configuration travels from pytest or the command line into the simulator:
as JSON in one environment variable per kind of design."""

import json
import os
from dataclasses import asdict

__all__ = ["EnvConfig"]


class EnvConfig:
    """Mixin for frozen dataclass configurations; subclasses set ``ENV``."""

    ENV = None

    def to_json(self):
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text):
        return cls(**json.loads(text))

    @classmethod
    def from_env(cls, *, required=True):
        text = os.environ.get(cls.ENV)
        if text is None:
            if required:
                raise RuntimeError(f"{cls.ENV} is not set: run testbenches through pytest or "
                                   f"'apwake', which pass the configuration")
            return None
        return cls.from_json(text)
