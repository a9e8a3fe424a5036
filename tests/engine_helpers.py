"""Running the real engine in-process and keeping its events."""

from kohya_lite.config import merge_config
from kohya_lite.engine.events import EventWriter
from kohya_lite.engine.train import train


def train_collect(cfg_dict: dict, **kw):
    """Train a kohya_ss-style config dict; the engine's result and every event it wrote, in order."""
    cfg, _ = merge_config(cfg_dict)
    events = []
    result = train(cfg, events=EventWriter(listener=events.append), progress_bar=False, **kw)
    return result, events
