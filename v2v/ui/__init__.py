"""`v2v ui`: a local web page for one clip at a time: upload, see the poses, restyle with progress, compare,
download, rerun from the history. Needs the ``ui`` extra (Gradio): ``pip install 'v2v[ui]'``.

    uploads.py  the browser's files stored safely under --out      jobs.py     one job at a time, progress, cancel
    runs.py     run folders, the history, the pose preview          form.py     the form <-> the options
    views.py    what the page shows (HTML)                          handlers.py what each control does
    app.py      the page's layout and wiring                        server.py   starting it, offline, on 127.0.0.1
"""
