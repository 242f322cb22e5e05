"""Training: the builder that assembles a run (`builder`), the loop (`trainer`), the one gate
before any work (`preflight`), executors, optimizer and schedules, fine-tune methods, model
construction, the validation pass, resume, the pipeline of stages and the end-of-run text.
The plug-in contracts (`kronos_engine.callback`, `.context`, `.strategy`) belong to this layer;
the built-in plug-ins (`kronos_engine.callbacks`, `.strategies`) sit above it.
"""
