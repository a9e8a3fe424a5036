"""The browser GUI (gradio). `ui.app.build_app` assembles the tabs; each tab module only wires widgets to
library calls (config, check, dataset, models.detect, worker, captioning). `fields`, `files` and `run_view` hold
the page's plain-Python helpers and import no gradio."""
