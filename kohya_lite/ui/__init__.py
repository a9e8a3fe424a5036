"""The browser GUI (gradio). `ui.app.build_app` assembles the tabs; each tab module only wires widgets to
library calls (config, check, dataset, worker, captioning). `fields`, `files`, `run_view` and
`source_model` hold the page's plain-Python helpers and import no gradio."""
