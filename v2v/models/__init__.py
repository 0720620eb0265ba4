"""The models: which ones a run uses, finding their files, checking them, loading them.

    modelset.py  ModelSet: each model's spec for one run (the defaults, the tiny set, what the options name)
    catalog.py   base model short names (`v2v models`) and what is in the local Hugging Face cache
    hub.py       a spec to a local file or folder: hub ids (downloaded once), folders, single files
    files.py     what a weights file holds (from its header), reading state dicts safely
    check.py     the preflight: the right kinds of model, fitting together, before any frame is decoded
    motion.py    motion modules: Lightning's files, state-dict layouts, the adapter's config, motion LoRAs
    load.py      DiffusionModels and load_diffusion_models: everything the sampler needs, on the device
"""
